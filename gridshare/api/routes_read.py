"""Read endpoints: intervals, member statements, bands, the DSO's compliance audit, health."""

from __future__ import annotations

from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import APIRouter, Path, Query, Request, Response

from gridshare.chain.errors import ContractRevert
from market.settlement import GRID_ADDRESS
from market.statements import member_statement

from .errors import ApiError
from .schemas import (
    UINT64_MAX,
    BandOut,
    BandsOut,
    ComplianceOut,
    ErrorOut,
    HealthOut,
    IntervalOut,
    StatementOut,
    TradeOut,
)

router = APIRouter(tags=["results"])
audit_router = APIRouter(tags=["audit"])

#: Widest interval range one request may ask for (bands, compliance).
MAX_SPAN_INTERVALS = 10_000
ERRORS = {code: {"model": ErrorOut} for code in (404, 422, 503)}

IntervalPath = Annotated[int, Path(ge=0, le=UINT64_MAX, description="interval id")]
FromQ = Annotated[int, Query(alias="from", ge=0, le=UINT64_MAX, description="first interval id")]
ToQ = Annotated[int, Query(alias="to", ge=0, le=UINT64_MAX, description="last interval id")]


def _span(lo: int, hi: int, limit: int | None = MAX_SPAN_INTERVALS) -> None:
    if lo > hi:
        raise ApiError(422, "invalid_range", f"from={lo} is after to={hi}", "from")
    if limit is not None and hi - lo + 1 > limit:
        raise ApiError(422, "range_too_large",
                       f"from..to spans {hi - lo + 1} intervals; at most {limit} per request",
                       "to")


@router.get("/v1/intervals/{interval}", response_model=IntervalOut, responses=ERRORS,
            summary="Orders, commitment and settlement of one interval")
def get_interval(request: Request, interval: IntervalPath) -> IntervalOut:
    api = request.app.state.api
    mc, gw = api.mc, api.gateway
    state = mc.interval_state(interval)
    counts = gw.store.counts(interval)
    settled = next((s for s in mc.settlements() if s.interval == interval), None)
    out = IntervalOut(
        interval=interval,
        start_unix_s=interval * api.interval_seconds,
        end_unix_s=(interval + 1) * api.interval_seconds,
        open_for_orders=gw.interval_open(interval),
        orders_accepted_by_api=sum(counts.values()) - counts["failed"],
        orders_by_status=counts,
        orders_on_chain=len(mc.placed_orders(interval)),
        committed=bool(state["committed"]),
        settled=bool(state["settled"]),
        book_hash="0x" + bytes(state["bookHash"]).hex(),
    )
    if settled is not None:
        out.clearing_price_micro_eur_per_kwh = settled.clearing_price_micro_eur_per_kwh
        out.battery_power_w = settled.battery_power_w
        out.trades = [TradeOut(buyer=t.buyer, seller=t.seller, energy_wh=t.energy_wh,
                               price_micro_eur_per_kwh=t.price_micro_eur_per_kwh,
                               amount_nano_eur=t.energy_wh * t.price_micro_eur_per_kwh)
                      for t in settled.trades]
        out.settlement_tx = settled.tx_hash
        out.settlement_block = settled.block_number
    return out


@router.get("/v1/members/{address}/statement", response_model=StatementOut, responses=ERRORS,
            summary="A member's energy and money over settled intervals")
def get_statement(
    request: Request,
    address: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$")],
    from_interval: Annotated[int, Query(alias="from", ge=0, le=UINT64_MAX)] = 0,
    to_interval: Annotated[int, Query(alias="to", ge=0, le=UINT64_MAX)] = UINT64_MAX,
) -> StatementOut:
    """Energy in Wh and money in nano-euro; ``net_nano_eur`` over all settled intervals
    equals the change of ``onchain_balance_nano_eur``."""
    _span(from_interval, to_interval, limit=None)
    mc = request.app.state.api.mc
    member = to_checksum_address(address)
    if member in (GRID_ADDRESS, mc.battery.account):
        raise ApiError(422, "not_a_member", f"{member} is the grid or the battery account",
                       "address")
    chosen = [(s.interval, s.trades) for s in mc.settlements()
              if from_interval <= s.interval <= to_interval]
    st = member_statement(member, chosen, mc.battery.account, mc.shares_bps())
    balance = int(mc.chain.call(mc.market.functions.balanceOf(member)))
    return StatementOut(from_interval=from_interval, to_interval=to_interval,
                        onchain_balance_nano_eur=balance, **st.to_dict())  # type: ignore[arg-type]


@audit_router.get("/v1/bands", response_model=BandsOut, responses=ERRORS,
                  summary="Bands from the capacity contract (DSO audit)")
def get_bands(
    request: Request,
    from_interval: FromQ,
    to_interval: ToQ,
    device: Annotated[int | None, Query(ge=0, le=2**32 - 1, description="device id")] = None,
) -> BandsOut:
    """Each band with the hash of the oracle's inputs and the block it was written in."""
    _span(from_interval, to_interval)
    api = request.app.state.api
    if device is not None and device not in api.device_ids:
        raise ApiError(404, "unknown_device",
                       f"device {device} is not registered in this deployment", "device")
    bands = api.audit.bands(from_interval, to_interval, device)
    return BandsOut(from_interval=from_interval, to_interval=to_interval, device_id=device,
                    bands=[BandOut(**vars(b)) for b in bands])


@audit_router.get("/v1/audit/compliance", response_model=ComplianceOut, responses=ERRORS,
                  summary="Metered power against bands per device and interval")
def get_compliance(request: Request, from_interval: FromQ, to_interval: ToQ) -> ComplianceOut:
    """Every meter reading of a device with a band is checked against it; violations are
    listed (the first 1000) with their excess in W."""
    _span(from_interval, to_interval)
    rep = request.app.state.api.audit.compliance(from_interval, to_interval)
    return ComplianceOut(
        from_interval=rep.from_interval, to_interval=rep.to_interval,
        compliant=rep.n_violations == 0, n_readings_checked=rep.n_readings_checked,
        n_readings_without_band=rep.n_readings_without_band, n_violations=rep.n_violations,
        violations_listed=len(rep.violations), rows=rep.rows,  # type: ignore[arg-type]
        violations=rep.violations)  # type: ignore[arg-type]


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}},
            tags=["health"], summary="Chain reachable, last block, oracle lag")
def healthz(request: Request, response: Response) -> HealthOut:
    """200 when the chain answers, 503 (same body) when it does not."""
    api = request.app.state.api
    gw = api.gateway
    waiting = gw.store.counts()
    n_waiting = waiting["pending"] + waiting["sent"]
    oldest = gw.store.oldest_unfinished_unix_s()
    age = None if oldest is None else max(0.0, gw.clock() - oldest)
    common = {"chain_id": api.chain.chain_id, "orders_waiting_for_chain": n_waiting,
              "oldest_waiting_order_age_s": age}
    try:
        block = api.chain.w3.eth.get_block("latest")
        cap = api.mc.capacity.functions
        written = bool(api.chain.call(cap.anyIntervalWritten()))
        last_band = int(api.chain.call(cap.lastInterval())) if written else None
        band_age = None
        if last_band is not None:
            try:
                record = api.chain.call(cap.intervalRecord(last_band))
                band_age = int(block["timestamp"]) - int(_updated_at(record))
            except ContractRevert:
                band_age = None
    except Exception as exc:  # unreachable node: report, do not fail
        gw.probe()
        response.status_code = 503
        return HealthOut(status="degraded", chain_reachable=False, last_block=gw.last_block,
                         last_block_timestamp_unix_s=None, current_interval=None,
                         oracle_last_band_interval=None, oracle_lag_intervals=None,
                         oracle_band_age_s=None, error=f"{type(exc).__name__}: {exc}", **common)
    ts = int(block["timestamp"])
    current = ts // api.interval_seconds
    return HealthOut(
        status="ok", chain_reachable=True, last_block=int(block["number"]),
        last_block_timestamp_unix_s=ts, current_interval=current,
        oracle_last_band_interval=last_band,
        oracle_lag_intervals=None if last_band is None else current - last_band,
        oracle_band_age_s=band_age, **common)


def _updated_at(record: object) -> int:
    """``updatedAt`` of an ``intervalRecord`` result (tuple or struct)."""
    if isinstance(record, (tuple, list)):
        # (inputsHash, updatedAt, bandCount)
        return int(record[1])
    return int(record.updatedAt)  # type: ignore[attr-defined]
