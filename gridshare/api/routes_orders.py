"""``/v1/orders``: submit a signed order, read its status, fetch the EIP-712 schema; a
member's own orders (``/v1/members/{address}/orders``). Reading an order needs its prosumer's
signed read proof (:mod:`gridshare.api.auth`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from market.gateway.store import StoredOrder
from market.orders import EIP712_TYPES, ORDER_TYPE, Order, Side

from .auth import require_owner, signed_member
from .errors import ApiError
from .schemas import (
    ErrorOut,
    MemberOrdersOut,
    OrderAccepted,
    OrderIn,
    OrderSchema,
    OrderStatus,
)

router = APIRouter(prefix="/v1/orders", tags=["orders"])
members_router = APIRouter(prefix="/v1/members", tags=["orders"])

FIELD_MAP = {
    "prosumer": "prosumer", "interval": "interval", "side": "side",
    "energy_wh": "energyWh", "price_micro_eur_per_kwh": "priceMicroEurPerKwh",
    "nonce": "nonce", "deadline_unix_s": "deadline",
}
SIDE_CODES = {"buy": int(Side.BUY), "sell": int(Side.SELL)}
ERRORS = {code: {"model": ErrorOut} for code in (400, 403, 409, 413, 422, 429, 503)}
PRIVATE_ERRORS = {code: {"model": ErrorOut} for code in (401, 403, 404, 422, 429, 503)}
#: Most orders one member-orders request lists.
MAX_LISTED = 500
Member = Annotated[str, Depends(signed_member)]


def order_of(body: OrderIn) -> Order:
    """The EIP-712 ``Order`` of a request body."""
    return Order(body.prosumer, body.interval, Side(SIDE_CODES[body.side]), body.energy_wh,
                 body.price_micro_eur_per_kwh, body.nonce, body.deadline_unix_s)


@router.post("", status_code=201, response_model=OrderAccepted, responses=ERRORS,
             summary="Submit an EIP-712 signed order")
async def submit_order(body: OrderIn, request: Request, response: Response) -> OrderAccepted:
    """Verify signature (made canonical: v 27/28, low s), registration, nonce, deadline
    (not before the interval starts), energy and price bounds, the interval window (current
    interval .. current + ``max_intervals_ahead`` of GET /v1/orders/schema), open interval and
    the prosumer's order quota of the interval, then store the order durably; it is relayed to
    the market contract and enters its interval's book and clearing. Nothing is stored when any
    check fails."""
    gateway = request.app.state.api.gateway
    try:
        order = order_of(body)
    except ValueError as exc:
        raise ApiError(422, "invalid_order", str(exc)) from None
    accepted = await gateway.submit_async(order, bytes.fromhex(body.signature[2:]))
    order_hash = "0x" + accepted.digest.hex()
    url = f"/v1/orders/{order_hash}"
    response.headers["Location"] = url
    return OrderAccepted(order_hash=order_hash, interval=order.interval,
                         prosumer=order.prosumer, nonce=order.nonce, status="pending",
                         status_url=url)


@router.get("/schema", response_model=OrderSchema, summary="EIP-712 types and domain")
def order_schema(request: Request) -> OrderSchema:
    """What to sign: ``eth_signTypedData_v4`` with these types, this domain and the
    ``Order`` message built from the request fields (``field_map``)."""
    gateway = request.app.state.api.gateway
    gateway.watch.check_up()
    b = gateway.bounds()
    first, last = gateway.window()
    return OrderSchema(
        primary_type="Order", types=EIP712_TYPES, domain=gateway.domain.as_dict(),
        order_type=ORDER_TYPE, field_map=FIELD_MAP, side_codes=SIDE_CODES,
        price_bounds_micro_eur_per_kwh={"min": b.min_price_micro_eur_per_kwh,
                                        "max": b.max_price_micro_eur_per_kwh},
        max_energy_wh=b.max_energy_wh, interval_s=gateway.interval_s,
        max_intervals_ahead=b.max_intervals_ahead,
        interval_window={"first": first, "last": last}, bounds_stated_by=b.stated_by,
        max_orders_per_interval=gateway.settings.max_orders_per_interval)


@router.get("/{order_hash}", response_model=OrderStatus, responses=PRIVATE_ERRORS,
            summary="Status of an accepted order (its prosumer only)")
def order_status(
    request: Request,
    order_hash: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$")],
    member: Member,
) -> OrderStatus:
    """``pending`` (stored), ``sent`` (transaction sent; ``block_number`` once mined, before
    its confirmations), ``relayed`` (``OrderPlaced`` in ``block_number`` with the configured
    confirmations) or ``failed`` (not placed; ``error`` says why and, after a failed earlier
    order, which nonce to sign again with). Needs the prosumer's signed read proof."""
    row = request.app.state.api.gateway.store.by_digest(bytes.fromhex(order_hash[2:]))
    if row is None or row.order.prosumer != member:  # not telling others which orders exist
        raise ApiError(404, "unknown_order", f"{member} has no order {order_hash} here")
    return _status_of(row)


@members_router.get("/{address}/orders", response_model=MemberOrdersOut,
                    responses=PRIVATE_ERRORS, summary="A member's own orders, newest first")
def member_orders(
    address: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$")],
    request: Request,
    member: Member,
    status: Annotated[Literal["pending", "sent", "relayed", "failed"] | None,
                      Query(description="only orders in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 100,
) -> MemberOrdersOut:
    """The member's orders with their relay status (e.g. ``status=failed`` to find orders to
    sign again). Needs the member's signed read proof."""
    require_owner(member, address)
    rows = request.app.state.api.gateway.store.of_prosumer(member, limit, status)
    return MemberOrdersOut(member=member, orders=[_status_of(r) for r in rows])


def _status_of(row: StoredOrder) -> OrderStatus:
    o = row.order
    return OrderStatus(
        order_hash="0x" + row.digest.hex(), prosumer=o.prosumer, interval=o.interval,
        side="buy" if o.side == Side.BUY else "sell", energy_wh=o.energy_wh,
        price_micro_eur_per_kwh=o.price_micro_eur_per_kwh, nonce=o.nonce,
        deadline_unix_s=o.deadline_unix_s, received_unix_s=row.received_unix_s,
        status=row.status, tx_hash=row.tx_hash, block_number=row.block_number,
        error=row.error)  # type: ignore[arg-type]
