"""Read endpoints: intervals, member statements, bands, the DSO's compliance audit, health.

A member's statement needs the member's signed read proof (:mod:`gridshare.api.auth`); the
others are public. Reads that need the deployment's contracts answer 503 ``chain_reset`` while
the node is not the deployment's chain (``market.gateway.watch.ChainWatch``)."""

from __future__ import annotations

from typing import Annotated, Any

from eth_utils import to_checksum_address
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from gridshare.chain.errors import ContractRevert
from gridshare.chain.identity import ChainResetError
from market.settlement import GRID_ADDRESS
from market.statements import member_statement
from oracle.audit import LOADING_BASIS

from .auth import require_owner, signed_member
from .errors import ApiError
from .schemas import (
    UINT64_MAX,
    BandOut,
    BandsOut,
    ComplianceOut,
    ErrorOut,
    HealthOut,
    IntervalOut,
    LoadingLimits,
    RelayOut,
    StaleBand,
    StatementOut,
    TradeOut,
)


def require_chain(request: Request) -> None:
    """Dependency: 503 ``chain_reset`` while the node is not the deployment's chain."""
    watch = request.app.state.api.gateway.watch
    if watch.reset_reason is not None:
        raise ChainResetError(watch.reset_reason)


router = APIRouter(tags=["results"])
audit_router = APIRouter(tags=["audit"], dependencies=[Depends(require_chain)])

#: Widest interval range one request may ask for (bands, compliance).
MAX_SPAN_INTERVALS = 10_000
ERRORS = {code: {"model": ErrorOut} for code in (404, 422, 429, 503)}
PRIVATE_ERRORS = {code: {"model": ErrorOut} for code in (401, 403, 404, 422, 429, 503)}
CHAIN = [Depends(require_chain)]

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
            dependencies=CHAIN, summary="Orders, commitment and settlement of one interval")
def get_interval(request: Request, interval: IntervalPath) -> IntervalOut:
    api = request.app.state.api
    mc, gw = api.mc, api.gateway
    state = mc.interval_state(interval)
    counts = gw.store.counts(interval)
    settled = next((s for s in mc.settlements() if s.interval == interval), None)
    first, last = gw.window()
    out = IntervalOut(
        interval=interval,
        start_unix_s=interval * api.interval_s,
        end_unix_s=(interval + 1) * api.interval_s,
        open_for_orders=first <= interval <= last and gw.interval_open(interval),
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


@router.get("/v1/members/{address}/statement", response_model=StatementOut,
            responses=PRIVATE_ERRORS, dependencies=CHAIN,
            summary="A member's energy and money over settled intervals (the member only)")
def get_statement(
    request: Request,
    address: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$")],
    signed: Annotated[str, Depends(signed_member)],
    from_interval: Annotated[int, Query(alias="from", ge=0, le=UINT64_MAX)] = 0,
    to_interval: Annotated[int, Query(alias="to", ge=0, le=UINT64_MAX)] = UINT64_MAX,
) -> StatementOut:
    """Energy in Wh and money in nano-euro; ``net_nano_eur`` over all settled intervals
    equals the change of ``onchain_balance_nano_eur``. Needs the member's signed read proof."""
    require_owner(signed, address)
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
    """Each band with the hash of the oracle's inputs and the block it was written in, and
    whether those inputs still match the readings on chain (``stale``, with the reason)."""
    _span(from_interval, to_interval)
    api = request.app.state.api
    if device is not None and device not in api.device_ids:
        raise ApiError(404, "unknown_device",
                       f"device {device} is not registered in this deployment", "device")
    bands = api.audit.check_bands(api.audit.bands(from_interval, to_interval, device))
    return BandsOut(from_interval=from_interval, to_interval=to_interval, device_id=device,
                    bands=[BandOut(**vars(b)) for b in bands])


@audit_router.get("/v1/audit/compliance", response_model=ComplianceOut, responses=ERRORS,
                  summary="Metered power against bands, branch loading and stale bands")
def get_compliance(request: Request, from_interval: FromQ, to_interval: ToQ) -> ComplianceOut:
    """Every meter reading of a device with a band is checked against it; violations are
    listed (the first 1000) with their excess in W. Each band's inputs are checked against the
    readings on chain (``stale``). Branch loading per interval from a load flow of the metered
    minutes, against the loading limits (percent of the ratings); intervals whose readings do
    not cover the feeder say what is missing instead of a figure."""
    _span(from_interval, to_interval)
    audit = request.app.state.api.audit
    rep = audit.compliance(from_interval, to_interval)
    checked = audit.check_bands(audit.bands(from_interval, to_interval))
    verdict = {b.interval: (b.stale, b.stale_reason, b.inputs_hash, b.block_number)
               for b in checked}
    unseen = (None, "not checked: the band left the chain during the request (reorg)")
    rows = [r | dict(zip(("stale", "stale_reason"), verdict.get(r["interval"], unseen)[:2],
                         strict=True)) for r in rep.rows]
    stale = [StaleBand(interval=i, inputs_hash=v[2], block_number=v[3], reason=v[1] or "")
             for i, v in sorted(verdict.items()) if v[0]]
    loading = audit.loading(from_interval, to_interval)
    limits = audit.limits_pct
    return ComplianceOut(
        from_interval=rep.from_interval, to_interval=rep.to_interval,
        compliant=rep.n_violations == 0, n_readings_checked=rep.n_readings_checked,
        n_readings_without_band=rep.n_readings_without_band, n_violations=rep.n_violations,
        violations_listed=len(rep.violations), rows=rows,  # type: ignore[arg-type]
        violations=rep.violations,  # type: ignore[arg-type]
        n_stale_bands=len(stale), stale_bands=stale,
        loading_limits=LoadingLimits(max_line_loading_pct=limits[0],
                                     max_trafo_loading_pct=limits[1]),
        loading_basis=LOADING_BASIS, loading_complete=loading.complete,
        loading_unmetered_buses=loading.unmetered_buses,
        loading_within_limits=loading.within_limits, n_loading_violations=loading.n_violations,
        loading_violations_listed=len(loading.violations),
        loading=loading.rows, loading_violations=loading.violations)  # type: ignore[arg-type]


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}},
            tags=["health"], summary="Chain, relay backlog and oracle lag")
def healthz(request: Request, response: Response) -> HealthOut:
    """200 ``ok``, or 503 ``degraded`` (same body) with ``problems``: the node unreachable or
    not the deployment's chain any more (``chain_state``), the relay stalled, failing or not
    running while orders wait, or an order waiting longer than ``max_waiting_age_s``."""
    api = request.app.state.api
    gw = api.gateway
    health = gw.health()
    common = _relay_fields(health, gw.settings.max_waiting_age_s) | {"chain_id":
                                                                      api.chain.chain_id}
    try:
        block, last_band, band_age = _oracle_view(api)
    except Exception as exc:  # unreachable node or lost contracts: report, do not fail
        gw.probe()
        response.status_code = 503
        return HealthOut(status="degraded", chain_reachable=False, chain_state=gw.watch.state,
                         last_block=gw.last_block, last_block_timestamp_unix_s=None,
                         current_interval=None, oracle_last_band_interval=None,
                         oracle_lag_intervals=None, oracle_band_age_s=None,
                         error=f"{type(exc).__name__}: {exc}",
                         **common | {"problems": [*common["problems"], "chain read failed"]})
    ts = int(block["timestamp"])
    current = ts // api.interval_s
    if health.problems:
        response.status_code = 503
    return HealthOut(
        status="degraded" if health.problems else "ok", chain_reachable=True,
        chain_state=gw.watch.state, last_block=int(block["number"]),
        last_block_timestamp_unix_s=ts, current_interval=current,
        oracle_last_band_interval=last_band,
        oracle_lag_intervals=None if last_band is None else current - last_band,
        oracle_band_age_s=band_age, **common)


def _relay_fields(health: Any, bound_s: float) -> dict[str, Any]:
    relay = None
    if health.relay is not None:
        fields = {k: v for k, v in vars(health.relay).items()
                  if k in RelayOut.model_fields}
        relay = RelayOut(heartbeat_age_s=health.relay_heartbeat_age_s or 0.0, **fields)
    return {"problems": list(health.problems), "orders_waiting_for_chain": health.waiting,
            "oldest_waiting_order_age_s": health.oldest_waiting_age_s,
            "max_waiting_age_s": bound_s, "relay": relay}


def _oracle_view(api: Any) -> tuple[Any, int | None, int | None]:
    """(latest block, last interval with bands, age of its bands in s)."""
    if api.gateway.watch.reset_reason is not None:
        raise ChainResetError(api.gateway.watch.reset_reason)
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
    return block, last_band, band_age


def _updated_at(record: object) -> int:
    """``updatedAt`` of an ``intervalRecord`` result (tuple or struct)."""
    if isinstance(record, (tuple, list)):
        # (inputsHash, updatedAt, bandCount)
        return int(record[1])
    return int(record.updatedAt)  # type: ignore[attr-defined]
