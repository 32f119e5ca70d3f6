"""Request and response bodies of the REST API (pydantic); units are in the field names.

Energy in Wh, power in W, prices in micro-euro per kWh (1 EUR/kWh = 1,000,000), money in
nano-euro (1 euro-cent = 10^7), times in unix seconds; intervals are ``uint64`` ids
(``t // intervalSeconds``). Integer fields are strict: ``"5"`` is not ``5``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

UINT64_MAX = 2**64 - 1
Uint64 = Annotated[int, Field(ge=0, le=UINT64_MAX, strict=True)]
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$",
                               examples=["0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"])]
Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OrderIn(_Strict):
    """A signed order. Fields map 1:1 to the EIP-712 ``Order`` message (see GET
    /v1/orders/schema): ``energy_wh`` = ``energyWh``, ``price_micro_eur_per_kwh`` =
    ``priceMicroEurPerKwh``, ``deadline_unix_s`` = ``deadline``, side buy = 0, sell = 1."""

    prosumer: Address
    interval: Uint64
    side: Literal["buy", "sell"]
    energy_wh: Uint64 = Field(description="most energy to trade, Wh (> 0)")
    price_micro_eur_per_kwh: Uint64 = Field(
        description="limit price: most a buyer pays, least a seller accepts")
    nonce: Uint64 = Field(description="the prosumer's next nonce (sequential from 0)")
    deadline_unix_s: Uint64 = Field(description="last unix second at which the order is valid")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$",
                           description="65-byte r ++ s ++ v EIP-712 signature, hex")


class OrderAccepted(BaseModel):
    """201: the order is validated and stored; ``status`` follows its relay to the chain."""

    order_hash: Hex32
    interval: int
    prosumer: str
    nonce: int
    status: str
    status_url: str


class OrderStatus(BaseModel):
    """An accepted order and where its relay to ``submitOrdersSigned`` stands."""

    order_hash: Hex32
    prosumer: str
    interval: int
    side: Literal["buy", "sell"]
    energy_wh: int
    price_micro_eur_per_kwh: int
    nonce: int
    deadline_unix_s: int
    received_unix_s: float
    status: Literal["pending", "sent", "relayed", "failed"]
    tx_hash: str | None = None
    block_number: int | None = None
    error: str | None = None


class OrderSchema(BaseModel):
    """The EIP-712 typed-data definition and domain to sign orders with, and what an order
    may hold: price bounds, largest energy, the interval window (chain time: the current
    interval to ``max_intervals_ahead`` after it; the deadline must not lie before the
    interval's start ``interval * interval_s``) and the orders a prosumer may place per
    interval."""

    primary_type: str
    types: dict[str, list[dict[str, str]]]
    domain: dict[str, Any]
    order_type: str
    field_map: dict[str, str]
    side_codes: dict[str, int]
    price_bounds_micro_eur_per_kwh: dict[str, int]
    max_energy_wh: int
    interval_s: int
    max_intervals_ahead: int
    interval_window: dict[str, int]
    bounds_stated_by: str
    max_orders_per_interval: int


class MemberOrdersOut(BaseModel):
    """A member's own orders, newest first."""

    member: str
    orders: list[OrderStatus]


class AuthSchema(BaseModel):
    """How to sign a member-private read: EIP-712 ``ReadAccess{member, expires}``."""

    primary_type: str
    types: dict[str, list[dict[str, str]]]
    domain: dict[str, Any]
    read_type: str
    headers: dict[str, str]
    max_lifetime_s: int


class TradeOut(BaseModel):
    """One settled trade; the grid is ``0x000...0``."""

    buyer: str
    seller: str
    energy_wh: int
    price_micro_eur_per_kwh: int
    amount_nano_eur: int


class IntervalOut(BaseModel):
    """One interval: orders seen by the API and on-chain, commitment and settlement."""

    interval: int
    start_unix_s: int
    end_unix_s: int
    open_for_orders: bool
    orders_accepted_by_api: int
    orders_by_status: dict[str, int]
    orders_on_chain: int
    committed: bool
    settled: bool
    book_hash: str
    clearing_price_micro_eur_per_kwh: int | None = None
    battery_power_w: int | None = None
    trades: list[TradeOut] = []
    settlement_tx: str | None = None
    settlement_block: int | None = None


class StatementOut(BaseModel):
    """A member's energy (Wh) and money (nano-euro) over the settled intervals in range."""

    member: str
    from_interval: int
    to_interval: int
    intervals: list[int]
    bought_local_wh: int
    sold_local_wh: int
    from_battery_wh: int
    to_battery_wh: int
    from_grid_wh: int
    to_grid_wh: int
    paid_local_nano_eur: int
    received_local_nano_eur: int
    paid_battery_nano_eur: int
    received_battery_nano_eur: int
    paid_grid_nano_eur: int
    received_grid_nano_eur: int
    battery_share_bps: int
    battery_share_charge_wh: int
    battery_share_discharge_wh: int
    battery_share_net_nano_eur: int
    net_nano_eur: int
    onchain_balance_nano_eur: int


class BandOut(BaseModel):
    """A band as written on-chain by the oracle."""

    interval: int
    device_id: int
    p_min_w: int
    p_max_w: int
    inputs_hash: str
    updated_at_unix_s: int
    block_number: int
    tx_hash: str
    stale: bool | None = Field(description=(
        "true: the oracle's inputs recomputed from the readings now on chain before the band's "
        "block do not hash to inputs_hash (readings changed by a reorg, or the audit's oracle "
        "settings differ); false: they do; null: not checked (stale_reason says why)"))
    stale_reason: str | None


class BandsOut(BaseModel):
    from_interval: int
    to_interval: int
    device_id: int | None
    bands: list[BandOut]


class ComplianceRow(BaseModel):
    """One device in one interval: its band and its metered power (W)."""

    device_id: int
    interval: int
    band_p_min_w: int
    band_p_max_w: int
    n_readings: int
    metered_p_min_w: int | None
    metered_p_max_w: int | None
    metered_p_mean_w: float | None
    n_violations: int
    worst_excess_w: int
    compliant: bool
    stale: bool | None = Field(description="the band's inputs check (as in /v1/bands)")
    stale_reason: str | None


class Violation(BaseModel):
    """One meter reading outside its device's band."""

    device_id: int
    interval: int
    timestamp_unix_s: int
    p_w: int
    band_p_min_w: int
    band_p_max_w: int
    excess_w: int


class LoadingRow(BaseModel):
    """Branch loading of one interval from a load flow of its metered minutes (percent of the
    rating, pandapower's ``loading_percent``); null figures when no minute was computed."""

    interval: int
    n_minutes: int
    n_minutes_computed: int
    complete: bool = Field(description="every minute of the interval computed")
    missing_readings: dict[str, int] = Field(
        description="device id -> minutes without an accepted reading (not computed)")
    missing_transformer_readings: int = Field(
        description="minutes without the transformer meter's voltage (the slack)")
    n_minutes_not_converged: int
    max_line_loading_pct: float | None
    max_line_id: int | None = Field(description="pandapower line index")
    max_line_timestamp_unix_s: int | None
    max_trafo_loading_pct: float | None
    max_trafo_id: int | None = Field(description="pandapower transformer index")
    max_trafo_timestamp_unix_s: int | None
    max_voltage_mismatch_pu: float | None = Field(
        description="largest |V_load_flow - V_meter| (complex, pu) at a metered bus")


class LoadingViolation(BaseModel):
    """One branch above its loading limit in one interval."""

    interval: int
    branch: str = Field(description="line or trafo")
    branch_id: int = Field(description="pandapower line or transformer index")
    loading_pct: float = Field(description="highest loading of the interval, percent")
    limit_pct: float
    n_minutes_above: int
    timestamp_unix_s: int = Field(description="minute of the highest loading")


class LoadingLimits(BaseModel):
    max_line_loading_pct: float
    max_trafo_loading_pct: float


class StaleBand(BaseModel):
    """An interval whose band's inputs hash does not match the chain's readings now."""

    interval: int
    inputs_hash: str
    block_number: int
    reason: str


class ComplianceOut(BaseModel):
    from_interval: int
    to_interval: int
    compliant: bool = Field(description="no reading outside its band")
    n_readings_checked: int
    n_readings_without_band: int
    n_violations: int
    violations_listed: int
    rows: list[ComplianceRow]
    violations: list[Violation]
    n_stale_bands: int
    stale_bands: list[StaleBand]
    loading_limits: LoadingLimits
    loading_basis: str = Field(description="how the loading figures are computed")
    loading_complete: bool = Field(description="every minute of every interval computed")
    loading_unmetered_buses: list[int] = Field(
        description="buses with load in the feeder model but no load meter: while there is "
        "one, no minute is computed")
    loading_within_limits: bool | None = Field(
        description="false: a loading violation; true: complete and none; null: incomplete")
    n_loading_violations: int
    loading_violations_listed: int
    loading: list[LoadingRow]
    loading_violations: list[LoadingViolation]


class RelayOut(BaseModel):
    """The relay's own report (``state``: running, stalled, error, chain_down, chain_reset,
    stopped) and counters since it started."""

    state: str
    detail: str
    pid: int
    relayer: str
    confirmations: int
    heartbeat_age_s: float
    in_flight: int
    sent: int
    relayed: int
    failed: int
    rebroadcast: int
    replaced: int


class HealthOut(BaseModel):
    """Liveness of the chain, the relay and the oracle; ``problems`` say why it is degraded."""

    status: Literal["ok", "degraded"]
    problems: list[str] = []
    chain_reachable: bool
    chain_state: Literal["ok", "down", "reset"]
    chain_id: int
    last_block: int | None
    last_block_timestamp_unix_s: int | None
    current_interval: int | None
    oracle_last_band_interval: int | None
    oracle_lag_intervals: int | None = Field(
        description="current interval minus the last interval with bands (<= 0: bands ahead)")
    oracle_band_age_s: int | None
    orders_waiting_for_chain: int
    oldest_waiting_order_age_s: float | None
    max_waiting_age_s: float = Field(
        description="the bound: degraded while an order waits longer for the chain")
    relay: RelayOut | None = Field(description="None: no relay ever ran on this order store")
    error: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    """Every 4xx/5xx answer: ``{"error": {"code", "message", "field"}}``."""

    error: ErrorBody
