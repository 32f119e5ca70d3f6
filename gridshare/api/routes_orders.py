"""``/v1/orders``: submit a signed order, read its status, fetch the EIP-712 schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from market.orders import EIP712_TYPES, ORDER_TYPE, Order, Side

from .errors import ApiError
from .schemas import ErrorOut, OrderAccepted, OrderIn, OrderSchema, OrderStatus

router = APIRouter(prefix="/v1/orders", tags=["orders"])

FIELD_MAP = {
    "prosumer": "prosumer", "interval": "interval", "side": "side",
    "energy_wh": "energyWh", "price_micro_eur_per_kwh": "priceMicroEurPerKwh",
    "nonce": "nonce", "deadline_unix_s": "deadline",
}
SIDE_CODES = {"buy": int(Side.BUY), "sell": int(Side.SELL)}
ERRORS = {code: {"model": ErrorOut} for code in (400, 403, 409, 413, 422, 503)}


def order_of(body: OrderIn) -> Order:
    """The EIP-712 ``Order`` of a request body."""
    return Order(body.prosumer, body.interval, Side(SIDE_CODES[body.side]), body.energy_wh,
                 body.price_micro_eur_per_kwh, body.nonce, body.deadline_unix_s)


@router.post("", status_code=201, response_model=OrderAccepted, responses=ERRORS,
             summary="Submit an EIP-712 signed order")
async def submit_order(body: OrderIn, request: Request, response: Response) -> OrderAccepted:
    """Verify signature, registration, nonce, deadline, bounds and open interval, then store
    the order durably; it is relayed to the market contract and enters its interval's
    commitment and clearing. Nothing is stored when any check fails."""
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
    lo, hi = gateway.price_bounds()
    return OrderSchema(
        primary_type="Order", types=EIP712_TYPES, domain=gateway.domain.as_dict(),
        order_type=ORDER_TYPE, field_map=FIELD_MAP, side_codes=SIDE_CODES,
        price_bounds_micro_eur_per_kwh={"min": lo, "max": hi},
        max_energy_wh=gateway.settings.max_energy_wh)


@router.get("/{order_hash}", response_model=OrderStatus,
            responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
            summary="Status of an accepted order")
def order_status(
    request: Request,
    order_hash: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$")],
) -> OrderStatus:
    """``pending`` (stored), ``sent`` (transaction sent), ``relayed`` (OrderPlaced mined) or
    ``failed`` (the contract refused it; ``error`` says why)."""
    row = request.app.state.api.gateway.store.by_digest(bytes.fromhex(order_hash[2:]))
    if row is None:
        raise ApiError(404, "unknown_order", f"no order {order_hash} was accepted here")
    o = row.order
    return OrderStatus(
        order_hash="0x" + row.digest.hex(), prosumer=o.prosumer, interval=o.interval,
        side="buy" if o.side == Side.BUY else "sell", energy_wh=o.energy_wh,
        price_micro_eur_per_kwh=o.price_micro_eur_per_kwh, nonce=o.nonce,
        deadline_unix_s=o.deadline_unix_s, received_unix_s=row.received_unix_s,
        status=row.status, tx_hash=row.tx_hash, block_number=row.block_number,
        error=row.error)  # type: ignore[arg-type]
