"""The oracle loop (OCM paper Fig. 4): readings in, certified bands out, restart-safe.

Per step: check that the node is still the deployment's chain (``gridshare.chain.identity``:
chain id, genesis and deployment block, contract code; a reset stops the oracle with one line,
its store kept), ingest the new confirmed blocks (``oracle.ingest``), then for every target
interval whose source interval has closed: feeder state of the source interval
(``oracle.state``), persistence forecast, ``capacity.ocm.compute_bands`` over the forecast steps,
the intersection of the step bands, the Newton-Raphson check of the band (``oracle.certify``:
narrowed, or not written, when it fails) and ONE ``GridCapacity.writeBands`` transaction with
the keccak hash of the canonical inputs. Bands for interval t+1 come from the readings of t.

Which interval next: one more than the contract's ``lastInterval`` (or the last interval the
store handled, if later); before anything is written, the interval of the first accepted reading
at or after the deployment's interval (the interval of the deployment block's time; never
earlier), or the chain's current interval if that is later. The contract takes bands for
``[current, current + maxIntervalsAhead]`` only, so a target already in the past on the chain's
clock (the oracle was down) is recorded as skipped without computing it. Hence a restart never
writes an interval twice (the contract's record is the truth) and never leaves one unrecorded.
The clock is the chain's: the time of the latest block. A source interval is closed when every
load and transformer meter has its reading for the interval's last minute, or when the blocks
read so far reach the interval's end plus ``grace_s`` (the time of the last processed block: a
reading in a block not read yet, e.g. one still waiting for its confirmations, is never left
out). No meter moves the clock: a reading outside
its window around its block's time is rejected (``oracle.registry``).

Reorgs and rollbacks: the ingestion rewinds to the common ancestor; the store is reconciled
with the chain (band transactions the chain lost are written again); the account's nonce is
re-read from the node before every band transaction, so a rollback never leaves a nonce gap;
written bands whose source readings changed on the new branch are flagged (``stale_reason``,
in ``status``): the contract takes one write per interval, so such a band stays on chain.

Failed band transactions (every one is logged and stored in ``tx_failures``):

1. revert ``IntervalAlreadyWritten``: the interval is on chain (an earlier run's transaction
   got through): recorded as written from the chain's record, nothing sent again;
2. revert ``IntervalInPast`` (the chain's clock passed the interval while it was computed): it
   can never be written: recorded as skipped with the reason;
3. reverts about the registry (``OutsideRatedRange``, ``UnknownDevice``, ``InvalidBand``,
   ``DuplicateDevice``, ``EmptyBatch``, ``LengthMismatch``): the registry is re-read, the bands
   recomputed and sent again, up to ``max_tx_attempts``; then skipped with the reason;
4. ``AccessControlUnauthorizedAccount`` (the oracle lost ORACLE_ROLE): fatal, ``OracleFatal``
   stops the service (skipping would lose every interval);
5. any other revert: retried with backoff up to ``max_tx_attempts``, then skipped;
6. RPC failures (``ChainUnavailable``, ``TransactionTimeout``, ``TransactionRejected``) are not
   reverts: the service loop backs off and tries the same interval again, never skipping it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from eth_utils import keccak
from hexbytes import HexBytes

from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.ocm.policy import BandPolicy, policy_vectors
from gridshare.chain.backoff import Backoff, Stop, sleep, stop_requested
from gridshare.chain.deploy import Deployment
from gridshare.chain.errors import (
    ChainUnavailable,
    ContractRevert,
    TransactionRejected,
    TransactionTimeout,
)
from gridshare.chain.identity import (
    NO_CODE,
    ChainIdentity,
    ChainResetError,
    chain_url,
    check_identity,
    client_name,
    read_identity,
)
from gridshare.units import (
    kw_to_w,
    micro_pu_to_pu,
    nano_pu_to_pu,
    pct_to_milli_pct,
    pu_to_micro_pu,
    pu_to_nano_pu,
    var_to_kvar,
    w_to_kw,
)
from oracle.battery import (
    BELOW_RESERVE_TIERS,
    TIERS,
    BatteryLimits,
    limited_devices,
    needed_discharge_profile_kw,
    reserve_wh,
    soc_after_wh,
    storage_of,
)
from oracle.certify import (
    NrSettings,
    certify,
    loading_limits_pct,
    newton_raphson,
    nr_settings_of,
)
from oracle.forecast import (
    FORECAST_MODES,
    HISTORY_DAYS,
    ForecastSteps,
    forecast_steps,
    helm_voltage_magnitudes,
    intersect_bands,
    ramp_steps,
)
from oracle.ingest import Ingestor, PollReport
from oracle.registry import (
    DEFAULT_WINDOW,
    KIND_NAMES,
    SECONDS_PER_MINUTE,
    DeviceRegistry,
    ReadingWindow,
)
from oracle.sessions import MAX_SESSION_S, connected_stations
from oracle.state import build_state, feeder_model, minutes_per_interval, profile_forecast
from oracle.store import Store

log = logging.getLogger(__name__)

INPUTS_FORMAT = "gridshare-oracle-inputs/2"
REGISTRY_ERRORS = frozenset({"OutsideRatedRange", "UnknownDevice", "InvalidBand",
                             "DuplicateDevice", "EmptyBatch", "LengthMismatch"})
#: Reverts after which an interval can never be written.
NEVER_WRITABLE = frozenset({"IntervalInPast"})
RPC_ERRORS = (ChainUnavailable, TransactionTimeout, TransactionRejected)
#: Default confirmations per node client (``gridshare.chain.identity.client_name``): none on
#: the embedded chain (one process, no reorgs), one block on anvil/Hardhat (a devnet's newest
#: block is replaced only by hand) and on Besu (QBFT blocks are final once imported; one block of
#: margin against an RPC node still importing its newest), ``DEFAULT_CONFIRMATIONS`` elsewhere.
CLIENT_CONFIRMATIONS = {"embedded": 0, "anvil": 1, "hardhat": 1, "hardhatnetwork": 1,
                        "besu": 1}
DEFAULT_CONFIRMATIONS = 6
#: How often an idle oracle asks the node for its block number (s).
BLOCK_POLL_S = 0.05


class OracleFatal(RuntimeError):  # noqa: N818 (a stop condition, not a recoverable error)
    """The oracle cannot write bands at all (e.g. the account lacks ORACLE_ROLE)."""


def default_confirmations(chain: Any) -> int:
    """Confirmations for the node's client (see ``CLIENT_CONFIRMATIONS``)."""
    return CLIENT_CONFIRMATIONS.get(client_name(chain), DEFAULT_CONFIRMATIONS)


@dataclass(frozen=True)
class OcmSettings:
    """OCM parameters of the oracle (all part of the hashed inputs). Voltages in pu.

    ``forecast``: which minutes of the source interval become OCM steps ("all", "extremes",
    "last"; see ``oracle.forecast.forecast_steps``), or "ramps": the last minute plus the worst
    ramps of the same interval on ``history_days`` previous days (``oracle.forecast.ramp_steps``;
    ``ramp_coverage``: the share of those ramps the band covers).
    ``battery_reserve_h``: None, bands blind to the battery's charge (the paper's); else the
    battery's range in each band is what its metered state of charge allows while keeping the
    reserve that the needed discharge of the next ``battery_reserve_h`` hours takes
    (``oracle.battery``), down to ``soc_min`` only where no band keeps it.
    ``max_line_loading_pct`` /
    ``max_trafo_loading_pct``: thermal limits of every rated line and transformer, percent of
    its rating (``capacity.ocm.compute_bands``; ``inf``: none). ``band_policy``: the product
    band policy (``capacity.ocm.policy``, needs objective "fair"); None: the paper's objective.
    ``station_sessions``: a charging station gets a band and its guarantee only while a vehicle
    session declared on chain covers the interval (``oracle.sessions``); else [0, 0] W.
    ``battery_follows``: the community battery follows the feeder within its band (it takes at
    most what keeps every bus at ``v_low``, minute by minute): its ``P_max`` is what the grid
    needs now (``follow_battery``), not the worst step's, and it funds the stations' share above
    their guarantee (``BandPolicy.battery_shares``). ``reserve_station_kw``: the power per
    charging station the battery reserve funds (None: the band policy's guarantee).
    """

    objective: str = "sum"
    seed: int = 0
    n_random: int = 200
    forecast: str = "extremes"
    v_low_pu: float = 0.95
    v_high_pu: float = 1.05
    margin_pu: float = 1e-5
    ga_population: int = 16
    ga_max_generations: int = 20
    max_line_loading_pct: float = 100.0
    max_trafo_loading_pct: float = 100.0
    band_policy: BandPolicy | None = None
    history_days: int = HISTORY_DAYS
    ramp_coverage: float = 1.0
    battery_reserve_h: float | None = None
    station_sessions: bool = False
    battery_follows: bool = False
    reserve_station_kw: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.history_days <= 366:
            raise ValueError(f"history_days must lie in 1..366, got {self.history_days}")
        if not 0 < self.ramp_coverage <= 1:
            raise ValueError(f"ramp_coverage must lie in (0, 1], got {self.ramp_coverage}")
        reserve_h = self.battery_reserve_h
        if reserve_h is not None and not (0 <= reserve_h <= 24
                                          and float(reserve_h * 60).is_integer()):
            raise ValueError(f"battery_reserve_h must be whole minutes in 0..24 h, got "
                             f"{self.battery_reserve_h}")
        if self.reserve_station_kw is not None and not (
                math.isfinite(self.reserve_station_kw) and self.reserve_station_kw >= 0):
            raise ValueError(f"reserve_station_kw must be a finite number >= 0 kW, got "
                             f"{self.reserve_station_kw}")
        if self.band_policy is not None and self.objective != "fair":
            raise ValueError(f"band_policy needs objective 'fair', got {self.objective!r}")
        if not (self.max_line_loading_pct > 0 and self.max_trafo_loading_pct > 0):
            raise ValueError("max_line_loading_pct and max_trafo_loading_pct must be > 0")
        if self.forecast not in FORECAST_MODES:
            raise ValueError(f"forecast must be one of {FORECAST_MODES}, got {self.forecast!r}")
        if self.n_random < 0 or self.ga_population < 4 or self.ga_max_generations < 0:
            raise ValueError("n_random >= 0, ga_population >= 4, ga_max_generations >= 0")


@dataclass(frozen=True)
class OracleConfig:
    """How the oracle runs. Times in seconds; ``confirmations`` None: by the node's client
    (``default_confirmations``); ``window``: how far a reading may lie from its block's time;
    ``nr``: the Newton-Raphson check of every band (part of the hashed inputs);
    ``poll_interval_s``: the longest idle wait between steps (a new block ends it at once)."""

    db_path: str = "oracle.sqlite"
    confirmations: int | None = None
    window_blocks: int = 50
    max_blocks_per_poll: int = 2000
    grace_s: int = 60
    forecast_seed: int = 0
    ocm: OcmSettings = field(default_factory=OcmSettings)
    nr: NrSettings = field(default_factory=NrSettings)
    window: ReadingWindow = DEFAULT_WINDOW
    max_tx_attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    explicit_gas: int | None = None
    poll_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if (self.confirmations is not None and self.confirmations < 0) or self.grace_s < 0 \
                or self.max_tx_attempts < 1:
            raise ValueError("confirmations >= 0, grace_s >= 0 and max_tx_attempts >= 1")


# ----------------------------------------------------------------------------- inputs
def canonical_bytes(inputs: Mapping[str, Any]) -> bytes:
    """The canonical encoding: JSON, keys sorted, no spaces, integers for every measurement."""
    return json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()


def inputs_hash(inputs: Mapping[str, Any]) -> bytes:
    """keccak256 of ``canonical_bytes(inputs)`` (the bytes32 written on-chain)."""
    return keccak(canonical_bytes(inputs))


def interval_seed(base_seed: int, interval: int) -> int:
    """The OCM seed of one interval (reproducible, different per interval)."""
    return int((int(base_seed) * 1_000_003 + int(interval)) % (2**31 - 1))


def ocm_inputs(ocm: OcmSettings, interval: int) -> dict[str, Any]:
    """The ``ocm`` part of the canonical inputs of ``interval``: the settings in on-chain units
    and the interval's seed (also used by ``gridshare fleet`` to get the same bands)."""
    return {
        "objective": ocm.objective, "seed": interval_seed(ocm.seed, interval),
        "n_random": ocm.n_random, "forecast": ocm.forecast,
        "v_low_micro_pu": int(pu_to_micro_pu(ocm.v_low_pu)),
        "v_high_micro_pu": int(pu_to_micro_pu(ocm.v_high_pu)),
        "margin_nano_pu": pu_to_nano_pu(ocm.margin_pu),
        "ga_population": ocm.ga_population, "ga_max_generations": ocm.ga_max_generations,
        "max_line_loading_milli_pct": _milli_pct(ocm.max_line_loading_pct),
        "max_trafo_loading_milli_pct": _milli_pct(ocm.max_trafo_loading_pct),
        **({} if ocm.band_policy is None else {"policy": {
            "guaranteed_min_w": int(kw_to_w(ocm.band_policy.guaranteed_min_kw)),
            "station_on_min_w": int(kw_to_w(ocm.band_policy.station_on_min_kw)),
            "committed_min_w": {k: int(kw_to_w(v))
                                for k, v in ocm.band_policy.committed_min_kw.items()}}}),
        **({"history_days": ocm.history_days} if uses_history(ocm) else {}),
        **({"ramp_coverage_ppm": round(ocm.ramp_coverage * 1_000_000)}
           if ocm.forecast == "ramps" else {}),
        **({} if ocm.battery_reserve_h is None else {
            "battery_reserve_min": round(ocm.battery_reserve_h * 60)}),
        **({"station_sessions": True} if ocm.station_sessions else {}),
        **({"battery_follows": True} if ocm.battery_follows else {}),
        **({} if ocm.reserve_station_kw is None else {
            "reserve_station_w": int(kw_to_w(ocm.reserve_station_kw))}),
    }


def uses_history(ocm: OcmSettings) -> bool:
    """Whether the settings need previous days (the ``ramps`` forecast, the battery reserve)."""
    return ocm.forecast == "ramps" or ocm.battery_reserve_h is not None


def _policy_of(ocm: Mapping[str, Any]) -> BandPolicy | None:
    """The band policy of the ``ocm`` part of canonical inputs (None: none)."""
    policy = ocm.get("policy")
    if policy is None:
        return None
    return BandPolicy(float(w_to_kw(policy["guaranteed_min_w"])),
                      float(w_to_kw(policy["station_on_min_w"])),
                      {k: float(w_to_kw(v)) for k, v in policy["committed_min_w"].items()})


def _milli_pct(limit_pct: float) -> int | None:
    """A loading limit in the canonical inputs: integer 1e-3 percent, None for no limit."""
    return None if math.isinf(limit_pct) else pct_to_milli_pct(limit_pct)


def oracle_forecast(feeder_name: str, config: OracleConfig) -> Any:
    """The profile forecast the oracle with ``config`` uses (``oracle.state.profile_forecast``),
    with the ramp history when its settings need it (``uses_history``)."""
    return profile_forecast(feeder_name, config.forecast_seed,
                            config.ocm.history_days if uses_history(config.ocm) else 0)


def battery_inputs(oracle: Any, target: int) -> dict[str, int] | None:
    """The battery part of ``target``'s inputs (``oracle.battery.BatteryLimits``) for an
    ``Oracle`` (or the audit's view of one): None when the settings keep no reserve or no
    community battery is registered."""
    ocm = oracle.config.ocm
    batteries = [d for d in oracle.registry.of_role("flexibility")
                 if d.kind == "community_battery"]
    if ocm.battery_reserve_h is None or not batteries:
        return None
    if len(batteries) > 1:
        raise OracleFatal(f"the battery reserve handles one community battery, the registry has "
                          f"{[d.device_id for d in batteries]}")
    device, interval_s = batteries[0], oracle.interval_s
    storage = storage_of(device)
    soc = soc_after_wh(storage, device.device_id, oracle.store.power_sums,
                       oracle.deploy_interval, target - 1, interval_s)
    guarantee_w = 0 if ocm.band_policy is None else int(kw_to_w(ocm.band_policy.guaranteed_min_kw))
    funded_w = guarantee_w if ocm.reserve_station_kw is None \
        else int(kw_to_w(ocm.reserve_station_kw))
    stations = tuple((d.bus, min(funded_w, d.p_max_rated_w))
                     for d in oracle.registry.of_role("flexibility")
                     if d.kind == "charging_station" and guarantee_w > 0)
    n_min = interval_s // SECONDS_PER_MINUTE
    of_day = int(oracle.forecast.minute_rows(np.array([target * interval_s]))[0]) // n_min
    horizon = round(ocm.battery_reserve_h * 3600) // interval_s

    def reserve_with(station_load_w: tuple[tuple[int, int], ...]) -> tuple[int, int | None]:
        needed = needed_discharge_profile_kw(
            oracle.deployment.feeder, oracle.config.forecast_seed, ocm.history_days, device.bus,
            max(abs(device.p_min_rated_w), abs(device.p_max_rated_w)),
            int(pu_to_micro_pu(ocm.v_low_pu)), interval_s, station_load_w, ocm.battery_follows)
        return reserve_wh(storage, needed, of_day, horizon, interval_s)

    reserve, first_need = reserve_with(stations)
    reserve_grid = reserve_with(())[0] if stations else reserve
    return BatteryLimits.of(storage, device.device_id, soc, reserve, interval_s, first_need,
                            reserve_grid).as_inputs()


def flexibilities_of(inputs: Mapping[str, Any]) -> list[Flexibility]:
    """The flexibilities named in canonical inputs (rated range W -> kW)."""
    return [
        Flexibility(f"device-{d[0]}", int(d[1]), float(w_to_kw(d[2])), float(w_to_kw(d[3])),
                    FlexibilityKind(d[4]))
        for d in inputs["devices"]
    ]


def without_vehicle_off(inputs: Mapping[str, Any]) -> list[list[Any]]:
    """The inputs' ``devices`` rows; with ``station_sessions`` (``oracle.sessions``) every
    charging station not in ``connected`` (no vehicle declared for the interval) rated [0, 0] W:
    its band is [0, 0] and it gets no guarantee."""
    if not inputs["ocm"].get("station_sessions"):
        return [list(d) for d in inputs["devices"]]
    connected = {int(i) for i in inputs.get("connected", [])}
    station = FlexibilityKind.CHARGING_STATION.value
    return [[d[0], d[1], 0, 0, d[4]] if d[4] == station and int(d[0]) not in connected
            else list(d) for d in inputs["devices"]]


def _guarantee_held(p_max_kw: np.ndarray, devices: list[list[Any]],
                    policy: BandPolicy | None) -> bool:
    """Whether every station's ``P_max`` (T, n_flex) kW reaches its guarantee
    (``capacity.ocm.policy.policy_vectors``: the guaranteed minimum, or its committed minimum if
    higher) at every step (True without a policy)."""
    if policy is None:
        return True
    pv = policy_vectors(policy, flexibilities_of({"devices": devices}))
    return bool(np.all(np.atleast_2d(p_max_kw)[:, pv.station]
                       >= pv.guarantee_kw[pv.station] - 1e-9))


def _bands_in_tiers(bands_for: Callable[[list[list[Any]], BandPolicy | None], Any],
                    devices: list[list[Any]], battery: Mapping[str, int],
                    policy: BandPolicy | None, follows: bool = False) -> tuple[str, Any]:
    """The battery's tier (``oracle.battery.TIERS``) and the bands ``bands_for(devices,
    policy)`` found in it: the first tier above ``soc`` with a band at every step that gives
    every station its guarantee, else the first with a band at every step, else ``soc`` without
    any station guarantee (the grid's own need takes what is left). Tiers whose floor equals the
    one before are skipped (same bands). A battery that ``follows`` the feeder funds the
    stations' share above their guarantee in every tier but ``soc``
    (``BandPolicy.battery_shares``): it gives only what they draw."""
    tiers = [t for k, t in enumerate(TIERS[:-1])
             if k == 0 or battery[f"p_min_{t}_w"] != battery[f"p_min_{TIERS[k - 1]}_w"]]
    found = None
    for tier in tiers:
        shares = follows and policy is not None and tier != TIERS[-1]
        result = bands_for(limited_devices(devices, battery, tier),
                           dataclasses.replace(policy, battery_shares=True) if shares else policy)
        if np.all(result.feasible):
            if _guarantee_held(result.p_max_kw, devices, policy):
                return tier, result
            found = found or (tier, result)
    if found is not None:
        return found
    no_guarantee = None if policy is None else dataclasses.replace(policy, guaranteed_min_kw=0.0)
    return TIERS[-1], bands_for(limited_devices(devices, battery, TIERS[-1]), no_guarantee)


def compute_from_inputs(feeder: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Run OCM on canonical inputs: per-step ``result`` and the intersected bands (kW, W); with
    an ``nr`` part in the inputs (the oracle's), the Newton-Raphson check (``nr``, an
    ``oracle.certify.NrCheck``) and the bands it certified (``p_min_w``/``p_max_w`` None: none).
    With a ``battery`` part (``oracle.battery.BatteryLimits``) the battery's range is what its
    charge allows at one of ``oracle.battery.TIERS`` (``battery_tier``): the first of restoring
    the reserve, keeping it and keeping the grid's own reserve with a band at every step that
    gives every station its guarantee, else the first of them with a band at every step, else
    down to ``soc_min`` without any station guarantee (what is left is for the grid's own need).
    Below the reserve (``BELOW_RESERVE_TIERS``, ``reserve_kept`` False) the battery's ``P_min``
    is raised to its ``P_max`` (a sub-box of a certified box is safe): it gives exactly the
    discharge the grid and the guarantees need, never the market's buyers."""
    from capacity.ocm import GaSettings, compute_bands

    if list(map(int, feeder.bus_ids)) != list(inputs["bus_ids"]):
        raise ValueError(f"inputs are for buses {inputs['bus_ids'][:5]}..., not feeder "
                         f"{feeder.name!r}")
    ocm = inputs["ocm"]
    line_limit_pct, trafo_limit_pct = loading_limits_pct(ocm)

    def bands_for(devices: list[list[Any]], policy: BandPolicy | None) -> Any:
        return compute_bands(
            feeder, flexibilities_of({"devices": devices}),
            np.asarray(w_to_kw(np.asarray(inputs["p_w"])), dtype=float),
            np.asarray(var_to_kvar(np.asarray(inputs["q_var"])), dtype=float),
            v_slack_pu=np.asarray(micro_pu_to_pu(np.asarray(inputs["v_slack_micro_pu"])),
                                  dtype=float),
            v_low=float(micro_pu_to_pu(ocm["v_low_micro_pu"])),
            v_high=float(micro_pu_to_pu(ocm["v_high_micro_pu"])),
            objective=ocm["objective"], seed=int(ocm["seed"]), n_random=int(ocm["n_random"]),
            ga=GaSettings(population=int(ocm["ga_population"]),
                          max_generations=int(ocm["ga_max_generations"])),
            margin_pu=nano_pu_to_pu(ocm["margin_nano_pu"]),
            max_line_loading_pct=line_limit_pct, max_trafo_loading_pct=trafo_limit_pct,
            policy=policy,
        )

    policy = _policy_of(ocm)
    devices = without_vehicle_off(inputs)
    battery = inputs.get("battery")
    battery_tier = None
    if battery is None:
        result = bands_for(devices, policy)
    else:
        battery_tier, result = _bands_in_tiers(bands_for, devices, battery, policy,
                                               bool(ocm.get("battery_follows")))
    lo_kw, hi_kw, empty = intersect_bands(result.p_min_kw, result.p_max_kw)
    if battery_tier in BELOW_RESERVE_TIERS:  # exactly the discharge needed
        k = [int(d[0]) for d in inputs["devices"]].index(int(battery["device_id"]))
        lo_kw = lo_kw.copy()
        lo_kw[k] = max(lo_kw[k], min(hi_kw[k], float(w_to_kw(battery["p_min_keep_w"]))))
    hi_kw, step_max_w = follow_battery(feeder, inputs, result, lo_kw, hi_kw, empty)
    out = {"result": result, "lo_kw": lo_kw, "hi_kw": hi_kw, "empty": empty,
           "battery_tier": battery_tier, "battery_step_max_w": step_max_w,
           "reserve_kept": None if battery_tier is None
           else battery_tier not in BELOW_RESERVE_TIERS,
           "p_min_w": [int(x) for x in np.atleast_1d(kw_to_w(lo_kw))],
           "p_max_w": [int(x) for x in np.atleast_1d(kw_to_w(hi_kw))],
           "device_ids": [int(d[0]) for d in inputs["devices"]]}
    nr = nr_settings_of(inputs)
    if nr is not None:
        started = time.perf_counter()
        out["nr"] = certify(certified_steps(inputs, empty), out["p_min_w"], out["p_max_w"], nr,
                            step_max_matrix(inputs, step_max_w))
        out["p_min_w"], out["p_max_w"] = out["nr"].p_min_w, out["nr"].p_max_w
        out["nr_s"] = time.perf_counter() - started
    return out


def _battery_column(inputs: Mapping[str, Any]) -> int | None:
    """Position of the community battery in the inputs' ``devices`` (None: none, or several)."""
    kind = FlexibilityKind.COMMUNITY_BATTERY.value
    cols = [k for k, d in enumerate(inputs["devices"]) if d[4] == kind]
    return cols[0] if len(cols) == 1 else None


def follow_battery(feeder: Any, inputs: Mapping[str, Any], result: Any, lo_kw: np.ndarray,
                   hi_kw: np.ndarray, empty: np.ndarray) -> tuple[np.ndarray, list[int] | None]:
    """The published ``P_max`` (kW) and, with ``battery_follows``, the battery's upper bound per
    OCM step (W; None: not following).

    A battery that follows the feeder takes, minute by minute, at most what keeps every bus at
    ``v_low`` (``capacity.reserve.highest_power_kw``), never below its ``P_min``. At OCM step
    ``s`` the band of the others (the intersection, inside step ``s``'s box) with the battery
    at most ``hi_s`` (step ``s``'s upper bound) lies inside step ``s``'s certified box, and the
    follower there takes at most ``hi_s`` (what keeps ``v_low`` with the others anywhere in
    their band): the certificate holds step by step (``oracle.certify``, ``step_max_w``). So its
    published ``P_max`` need not force the worst step's discharge for the whole interval: it is
    what the grid needs now, the newest step's highest power keeping ``v_low`` with every other
    flexibility at rest (at most the battery's rated and charge maximum; at least the
    intersection's), and the discharge the stations and ramps need comes when they come. The
    market meets a ``P_max < 0`` with exactly that discharge (``market.battery.dispatch``).
    Only where every step is feasible and the band is not ``empty``."""
    from capacity.reserve import highest_power_kw

    col = _battery_column(inputs)
    if not inputs["ocm"].get("battery_follows") or col is None or np.any(empty) \
            or not np.all(result.feasible):
        return hi_kw, None
    step_hi_kw = np.atleast_2d(result.p_max_kw)[:, col]
    cap_kw = float(w_to_kw(inputs["devices"][col][3]))
    if "battery" in inputs:
        cap_kw = min(cap_kw, float(w_to_kw(inputs["battery"]["p_max_soc_w"])))
    now_kw = highest_power_kw(
        feeder, int(inputs["devices"][col][1]), w_to_kw(np.asarray(inputs["p_w"][-1:], float)),
        var_to_kvar(np.asarray(inputs["q_var"][-1:], float)),
        float(micro_pu_to_pu(inputs["v_slack_micro_pu"][-1])),
        float(micro_pu_to_pu(inputs["ocm"]["v_low_micro_pu"]))
        + nano_pu_to_pu(inputs["ocm"]["margin_nano_pu"]), float(lo_kw[col]),
        max(cap_kw, float(lo_kw[col])))
    hi_kw = hi_kw.copy()
    hi_kw[col] = max(float(hi_kw[col]), float(now_kw[0]))
    return hi_kw, [int(x) for x in np.atleast_1d(kw_to_w(step_hi_kw))]


def step_max_matrix(inputs: Mapping[str, Any], step_max_w: list[int] | None
                    ) -> np.ndarray | None:
    """(steps, n_flex) upper bound per step in W (``inf`` but the following battery's), for
    ``oracle.certify.certify``; None when the battery does not follow."""
    if step_max_w is None:
        return None
    out = np.full((len(step_max_w), len(inputs["devices"])), np.inf)
    out[:, _battery_column(inputs)] = step_max_w
    return out


def certified_steps(inputs: Mapping[str, Any], empty: np.ndarray) -> Mapping[str, Any]:
    """The inputs whose steps the published band is checked at: every step, unless no box lies
    inside every step's band (``empty``) and the steps are the ``ramps`` forecast's: then the
    band is the last minute's (``intersect_bands``) and is checked there only, as with the
    ``last`` forecast; the interval's ramps are then not covered (``empty`` in the stored
    bands says so)."""
    if not np.any(empty) or inputs["ocm"].get("forecast") != "ramps":
        return inputs
    return {**inputs, **{k: inputs[k][-1:] for k in MEASURED_KEYS}}


# ----------------------------------------------------------------------------- the oracle
#: The measured parts of the canonical inputs: a band is stale when these changed.
MEASURED_KEYS = ("steps_unix_s", "p_w", "q_var", "v_slack_micro_pu")


@dataclass
class StepReport:
    """What one ``Oracle.step`` did."""

    polls: list[PollReport] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)

    @property
    def progressed(self) -> bool:
        return bool(self.written or self.skipped or any(p.advanced for p in self.polls))


class Oracle:
    """The oracle service for one deployment (see module docstring)."""

    def __init__(self, chain: Any, deployment: Deployment, config: OracleConfig | None = None,
                 feeder: Any = None, read_only: bool = False) -> None:
        """``read_only``: only for ``status`` next to a running oracle (the store opened
        read-only; no reconciliation, no adoption of chain progress, no writes). Raises
        ``ChainResetError`` when the node is not the store's (or the deployment's) chain."""
        self.chain = chain
        self.deployment = deployment
        self.config = config or OracleConfig()
        self.read_only = read_only
        self.capacity = deployment.capacity(chain)
        self.store = Store(self.config.db_path, read_only=read_only)
        binding = {"chain_id": str(chain.chain_id), "capacity": self.capacity.address,
                   "feeder": deployment.feeder}
        self.store.check_binding(binding) if read_only else self.store.bind(binding)
        self.identity = self._identity()
        self.feeder = feeder if feeder is not None else feeder_model(deployment.feeder)
        self.interval_s = int(chain.call(self.capacity.functions.intervalSeconds()))
        self.n_minutes = minutes_per_interval(self.interval_s)
        self.deploy_interval = int(chain.w3.eth.get_block(deployment.deploy_block)["timestamp"]
                                   ) // self.interval_s
        self.confirmations = (default_confirmations(chain) if self.config.confirmations is None
                              else self.config.confirmations)
        self.names = {int(d["device_id"]): str(d["name"]) for d in deployment.devices}
        self.registry = self._read_registry()
        self.forecast = oracle_forecast(deployment.feeder, self.config)
        self.ingestor = Ingestor(
            chain, self.capacity, self.store, lambda: self.registry,
            start_block=deployment.deploy_block, confirmations=self.confirmations,
            window_blocks=self.config.window_blocks,
            max_blocks_per_poll=self.config.max_blocks_per_poll, window=self.config.window,
            refresh_registry=self.refresh_registry,
        )
        self.account = chain.account("oracle")
        self.before_send: Callable[[int], None] | None = None  # test hook
        self._last_cache: tuple[int | None] | None = None
        if not read_only:
            newton_raphson(deployment.feeder)  # build the NR model now, not in the first band
            self.reconcile()

    # ---- chain identity, registry and clock
    def _identity(self) -> ChainIdentity:
        """The chain identity recorded in the store (recorded now on first use), checked
        against the node: ``ChainResetError`` when the node is another chain."""
        recorded = ChainIdentity.from_meta(self.store.meta_items())
        if recorded is not None:
            check_identity(self.chain, recorded,
                           f"the oracle store {self.store.path} is kept for inspection")
            return recorded
        found = read_identity(self.chain, [self.capacity.address], self.deployment.deploy_block)
        if found.code_hashes[self.capacity.address] == NO_CODE or not found.anchor_hash:
            raise ChainResetError(
                f"chain reset: no GridCapacity code at {self.capacity.address} (or no deployment "
                f"block {self.deployment.deploy_block}) on {chain_url(self.chain)}: the "
                "deployment file is not for this chain; deploy again")
        if not self.read_only:
            self.store.bind(found.as_meta())
        return found

    def check_chain(self) -> None:
        """``ChainResetError`` unless the node is still the recorded chain."""
        check_identity(self.chain, self.identity,
                       f"the oracle store {self.store.path} is kept for inspection")

    def _read_registry(self) -> DeviceRegistry:
        return DeviceRegistry.from_chain(self.chain, self.capacity, self.feeder, self.names)

    def refresh_registry(self) -> None:
        """Re-read the device registry from the contract."""
        self.registry = self._read_registry()

    def clock_s(self) -> int:
        """Now: the time of the chain's latest block (unix s)."""
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def current_interval(self) -> int:
        """The interval of the chain's clock (the contract's ``currentInterval``)."""
        return self.clock_s() // self.interval_s

    def chain_last_interval(self) -> int | None:
        """The contract's last written interval (None before the first write); read once per
        step (the cache is dropped whenever this oracle sends or the chain may have changed)."""
        if self._last_cache is None:
            if not self.chain.call(self.capacity.functions.anyIntervalWritten()):
                self._last_cache = (None,)
            else:
                self._last_cache = (int(self.chain.call(self.capacity.functions.lastInterval())),)
        return self._last_cache[0]

    # ---- restart safety
    def reconcile(self) -> None:
        """Make the store agree with the chain: settle 'sent' rows, forget writes the chain
        lost (reorg, rollback)."""
        self._last_cache = None
        for row in self.store.intervals("sent"):
            updated_at = self._record(row.interval)[1]
            if updated_at:
                self._mark_written_from_chain(row.interval, "receipt not seen before a restart")
            else:
                self.store.forget_intervals_after(row.interval - 1)
                log.warning("interval %d: transaction %s not on chain; will be sent again",
                            row.interval, row.tx_hash)
        last = self.chain_last_interval()
        lost = [r.interval for r in self.store.intervals("written")
                if last is None or r.interval > last]
        if lost:
            log.warning("intervals %s are no longer on chain (reorg or rollback); writing again",
                        lost)
            self.store.forget_intervals_after(min(lost) - 1)

    def _recover(self) -> None:
        """After the node was unreachable: same chain?, fresh nonce, store reconciled."""
        self.check_chain()
        self.chain.nonces.resync(self.account.address)
        self.reconcile()

    def _record(self, interval: int) -> tuple[bytes, int, int]:
        inputs_h, updated_at, count = self.chain.call(
            self.capacity.functions.intervalRecord(interval))
        return bytes(inputs_h), int(updated_at), int(count)

    def _mark_written_from_chain(self, interval: int, note: str) -> None:
        inputs_h, _updated_at, _ = self._record(interval)
        row = self.store.interval(interval)
        own = row is not None and row.inputs_hash == "0x" + inputs_h.hex()
        fields = {"status": "written", "inputs_hash": "0x" + inputs_h.hex(),
                  "written_at": time.time(),
                  "reason": f"{note}; on-chain inputs hash "
                            f"{'matches' if own else 'differs from'} ours"}
        if row is None:
            self.store.save_interval(interval=interval, source_interval=interval - 1, **fields)
        else:
            self.store.update_interval(interval, **fields)
        log.info("interval %d: already on chain (%s)", interval, fields["reason"])

    def adopt_chain_progress(self) -> None:
        """Record intervals up to the contract's ``lastInterval`` that this store did not write.

        An interval with a record on chain (an earlier run whose receipt was lost, or another
        oracle account) is recorded as written from the chain; one without, below
        ``lastInterval``, is recorded as skipped with the reason (the oracle writes in order).
        With an empty store only ``lastInterval`` itself is adopted.
        """
        last = self.chain_last_interval()
        handled = self.store.last_handled_interval()
        if last is None or (handled is not None and handled >= last):
            return
        for interval in range(last if handled is None else handled + 1, last + 1):
            if self._record(interval)[1]:
                self._mark_written_from_chain(interval, "found on chain")
            else:
                self._skip(interval, f"never written, and the contract's lastInterval is "
                           f"already {last} (written by another oracle account): this oracle "
                           "writes in order and goes on after it")

    def next_target(self) -> int | None:
        """The next interval to write (see module docstring), None before any reading."""
        if not self.read_only:
            self.adopt_chain_progress()
        last = self.chain_last_interval()
        handled = self.store.last_handled_interval()
        candidates = [x + 1 for x in (last, handled) if x is not None]
        if candidates:
            return max(candidates)
        first = self.store.first_reading_s(self.deploy_interval * self.interval_s)
        if first is None:
            return None
        return max(first // self.interval_s, self.current_interval())

    def read_clock_s(self) -> int | None:
        """The chain's clock as far as the oracle has read it: the time of the last processed
        block (None before the first)."""
        cursor = self.store.cursor()
        if cursor is None:
            return None
        return int(self.chain.w3.eth.get_block(cursor.block_number)["timestamp"])

    def source_closed(self, source: int) -> bool:
        """Whether the source interval's readings are complete, or its grace time is over in
        the blocks read so far (so no reading posted before then is still unread)."""
        end_s = (source + 1) * self.interval_s
        expected = {d.device_id for d in (*self.registry.of_role("load"),
                                          *self.registry.of_role("transformer"))}
        if expected and expected <= self.store.devices_with_reading_at(end_s - 60):
            return True
        read_s = self.read_clock_s()
        return read_s is not None and read_s >= end_s + self.config.grace_s

    # ---- one interval
    def build_inputs(self, target: int) -> tuple[dict[str, Any], Any]:
        """Canonical inputs of ``target`` (from the state of ``target - 1``) and the state."""
        source = target - 1
        start_s = source * self.interval_s
        state = build_state(
            source, self.interval_s, self.registry, self.feeder,
            self.store.readings_between(start_s, start_s + self.interval_s),
            self.store.last_readings_before(start_s), self.forecast,
        )
        if self.config.ocm.forecast == "ramps":
            steps = ramp_steps(state, self.forecast, helm_voltage_magnitudes(self.feeder),
                               self.config.ocm.ramp_coverage)
        else:
            steps = ForecastSteps.of_minutes(state, forecast_steps(state, self.config.ocm.forecast))
        devices = [[d.device_id, d.bus, d.p_min_rated_w, d.p_max_rated_w, d.kind]
                   for d in self.registry.of_role("flexibility")]
        if not devices:
            raise OracleFatal("the capacity contract has no flexibility registered")
        inputs = {
            "format": INPUTS_FORMAT,
            "chain_id": int(self.chain.chain_id),
            "capacity": self.capacity.address,
            "feeder": self.deployment.feeder,
            "interval": int(target),
            "source_interval": int(source),
            "interval_s": self.interval_s,
            "bus_ids": [int(b) for b in state.bus_ids],
            "steps_unix_s": [int(x) for x in steps.timestamps],
            "p_w": steps.p_w.tolist(),
            "q_var": steps.q_var.tolist(),
            "v_slack_micro_pu": steps.v_slack_micro_pu.tolist(),
            "devices": devices,
            "ocm": ocm_inputs(self.config.ocm, target),
            "nr": self.config.nr.as_inputs(),
        }
        battery = battery_inputs(self, target)
        if battery is not None:
            inputs["battery"] = battery
        if self.config.ocm.station_sessions:
            start_s, end_s = target * self.interval_s, (target + 1) * self.interval_s
            inputs["connected"] = connected_stations(
                self.store.sessions_between(start_s, end_s, MAX_SESSION_S), start_s, end_s)
        return inputs, state

    def _compute(self, target: int) -> dict[str, Any] | None:
        """Inputs, OCM and the NR check of ``target``: the row to store and the bands; None
        (the interval recorded as skipped) when no band passed the NR check."""
        inputs, state = self.build_inputs(target)
        started = time.perf_counter()
        out = compute_from_inputs(self.feeder, inputs)
        out["compute_s"] = time.perf_counter() - started
        result, nr = out["result"], out["nr"]
        if state.filled:
            log.info("interval %d: filled %d missing meter minutes %s", target - 1,
                     state.n_missing, state.filled)
        row = {
            "interval": target, "source_interval": target - 1,
            "inputs_hash": "0x" + inputs_hash(inputs).hex(),
            "inputs_json": canonical_bytes(inputs).decode(),
            "bands_json": json.dumps({"device_ids": out["device_ids"], "p_min_w": out["p_min_w"],
                                      "p_max_w": out["p_max_w"],
                                      "empty": [bool(x) for x in out["empty"]],
                                      "battery_step_max_w": out["battery_step_max_w"],
                                      "reserve_kept": out["reserve_kept"],
                                      "battery_tier": out["battery_tier"]}),
            "n_readings": state.n_readings, "n_missing": state.n_missing,
            "missing_json": json.dumps({str(k): v for k, v in state.filled.items()}),
            "infeasible_steps": int(np.count_nonzero(~result.feasible)),
            "n_steps": int(result.n_steps), "computed_at": time.time(),
            "nr_points": nr.points, "nr_failed": nr.failed, "nr_narrowed": nr.narrowed,
        }
        if out["battery_tier"] == "soc":
            log.warning("interval %d: no band keeps the grid's own battery reserve of %d Wh; "
                        "its band may discharge it to soc_min (no station guarantee)", target,
                        inputs["battery"]["reserve_grid_wh"])
        if nr.narrowed:
            log.warning("interval %d: Newton-Raphson found %d of %d points outside the limits; "
                        "band narrowed %d time(s)%s", target, nr.failed, nr.points, nr.narrowed,
                        "" if nr.certified else " and still failing: not written")
        if not nr.certified:
            self._skip(target, f"Newton-Raphson check failed at {nr.failed} of {nr.points} "
                       f"points, also after narrowing the band {nr.narrowed} times",
                       status="skipped", **{k: v for k, v in row.items() if k != "interval"})
            return None
        battery = inputs.get("battery")
        return {"row": row, "out": out, "hash": inputs_hash(inputs),
                "reserve_wh": None if battery is None else int(battery["reserve_wh"]),
                "seconds": (out["compute_s"] - out["nr_s"], out["nr_s"])}

    def _send(self, target: int, computed: Mapping[str, Any]) -> tuple[Any, str]:
        """One ``writeBands`` for ``target`` (``writeBandsWithReserve`` with the battery's
        reserve, when the inputs have one): (receipt, tx hash). The nonce is re-read from the
        node first (a rollback may have dropped this account's last transactions)."""
        if self.before_send is not None:
            self.before_send(target)
        self._last_cache = None
        out = computed["out"]
        args = (target, computed["hash"], out["device_ids"], out["p_min_w"], out["p_max_w"])
        reserve = computed.get("reserve_wh")
        f = self.capacity.functions
        fn = f.writeBands(*args) if reserve is None else f.writeBandsWithReserve(*args, reserve)
        tx = {"to": self.capacity.address, "data": fn._encode_transaction_data()}
        if self.config.explicit_gas is not None:
            tx["gas"] = int(self.config.explicit_gas)
        tx_hash = None
        try:
            self.chain.nonces.resync(self.account.address)
            sent_hash, full = self.chain.send(tx, self.account)
            tx_hash = HexBytes(sent_hash).to_0x_hex()
            self.store.save_interval(status="sent", tx_hash=tx_hash, **computed["row"])
            return self.chain.wait(sent_hash, full), tx_hash
        except ContractRevert as exc:
            if tx_hash is not None:
                self.store.forget_intervals_after(target - 1)
                exc.tx_hash = exc.tx_hash or tx_hash
            raise
        except RPC_ERRORS as exc:
            self.store.record_failure(target, 0, f"{type(exc).__name__}: {exc}", tx_hash,
                                      "retry-later")
            raise

    def _on_revert(self, target: int, attempt: int, exc: ContractRevert) -> str:
        """Record and act on a reverted band transaction; returns the action taken."""
        action = self._revert_action(exc)
        self.store.record_failure(target, attempt, str(exc), exc.tx_hash, action)
        log.warning("interval %d: writeBands reverted (attempt %d): %s -> %s", target, attempt,
                    exc, action)
        if action == "already-written":
            self._mark_written_from_chain(target, "IntervalAlreadyWritten")
        elif action == "fatal":
            raise OracleFatal(f"interval {target}: {exc}") from exc
        elif action == "refresh":
            self.refresh_registry()
        return action

    def _skip(self, interval: int, reason: str, **fields: Any) -> None:
        fields.setdefault("status", "skipped")
        fields.setdefault("computed_at", time.time())
        fields.setdefault("source_interval", interval - 1)
        self.store.save_interval(interval=interval, reason=reason, **fields)
        log.error("interval %d: %s", interval, reason)

    def process(self, target: int) -> str:
        """Compute, check and write the bands of ``target``; returns "written" or "skipped"."""
        closed_at = time.time()
        last_error = ""
        backoff = Backoff(self.config.backoff_s, self.config.max_backoff_s)
        for attempt in range(1, self.config.max_tx_attempts + 1):
            computed = self._compute(target)
            if computed is None:
                return "skipped"
            try:
                receipt, tx_hash = self._send(target, computed)
            except ContractRevert as exc:
                last_error = str(exc)
                action = self._on_revert(target, attempt, exc)
                if action == "already-written":
                    return "written"
                if action == "skip":
                    break
                backoff.sleep()
                continue
            now = time.time()
            self.store.update_interval(target, status="written", written_at=now,
                                       block_number=int(receipt["blockNumber"]),
                                       latency_s=now - closed_at)
            log.info("interval %d: bands written in block %d (tx %s, %d steps, %d infeasible, "
                     "NR %d points; OCM %.2f s, NR %.2f s, in all %.2f s)", target,
                     int(receipt["blockNumber"]), tx_hash, computed["row"]["n_steps"],
                     computed["row"]["infeasible_steps"], computed["row"]["nr_points"],
                     *computed["seconds"], now - closed_at)
            return "written"
        self._skip(target, f"skipped after {attempt} attempt(s): {last_error}")
        return "skipped"

    @staticmethod
    def _revert_action(exc: ContractRevert) -> str:
        name = exc.error_name
        if name == "IntervalAlreadyWritten":
            return "already-written"
        if name in NEVER_WRITABLE:
            return "skip"
        if name == "AccessControlUnauthorizedAccount":
            return "fatal"
        if name in REGISTRY_ERRORS:
            return "refresh"
        return "retry"

    # ---- reorgs: bands whose inputs changed
    def recheck_written(self, since_s: int) -> dict[int, str]:
        """Compare the written bands whose source readings may lie in blocks after ``since_s``
        (unix s; readings are at most ``window.max_age_s`` older than their block) with the
        readings on the chain now; flag those whose measured inputs changed (``stale_reason``),
        clear the flag of those that agree again. Returns the stale ones."""
        first_source = (since_s - self.config.window.max_age_s - 60) // self.interval_s
        stale = {}
        for row in self.store.intervals("written"):
            if row.source_interval < first_source or not row.inputs_json:
                continue
            now, _ = self.build_inputs(row.interval)
            before = row.inputs
            if all(now[k] == before.get(k) for k in MEASURED_KEYS):
                if row.stale_reason:
                    self.store.mark_stale(row.interval, None)
                continue
            now_hash = "0x" + inputs_hash(now).hex()
            stale[row.interval] = (
                f"the readings of interval {row.source_interval} changed on the chain after a "
                f"reorg: the band on chain (inputs hash {row.inputs_hash[:10]}) was computed from "
                f"readings that are no longer the chain's (now {now_hash[:10]}); the contract "
                "takes one write per interval, so it stays: do not trust it")
            self.store.mark_stale(row.interval, stale[row.interval])
            log.warning("interval %d: stale band: %s", row.interval, stale[row.interval])
        return stale

    # ---- the loop
    def ingest(self) -> list[PollReport]:
        """Poll until the confirmed head of the step's start is reached (blocks that arrive
        meanwhile wait for the next step, so a fast chain cannot starve the bands); after a
        reorg reconcile the store and recheck the written bands the reorg may have changed."""
        reports = []
        reorg_block: int | None = None
        until = self.chain.block_number - self.confirmations
        for _ in range(10_000):
            report = self.ingestor.poll()
            reports.append(report)
            if report.reorg_depth:
                self.reconcile()
                cursor = self.store.cursor()
                block = self.deployment.deploy_block if cursor is None else cursor.block_number
                reorg_block = block if reorg_block is None else min(reorg_block, block)
            if report.retry:
                time.sleep(0.05)  # the chain moved under the read; let it settle
                continue
            if not report.advanced or report.to_block >= until:
                break
        if reorg_block is not None:
            self.recheck_written(int(self.chain.w3.eth.get_block(reorg_block)["timestamp"]))
        return reports

    def process_ready(self, stop: Stop = None) -> tuple[list[int], list[int]]:
        """Write every target interval whose source has closed, in order, until ``stop``;
        targets already in the past on the chain's clock are skipped without computing."""
        written, skipped = [], []
        while not stop_requested(stop):
            target = self.next_target()
            if target is None:
                break
            current = self.current_interval()
            if target < current:
                self._skip(target, f"in the past: the chain's clock is in interval {current} "
                           "and the contract takes bands from the current interval on")
                skipped.append(target)
                continue
            if not self.source_closed(target - 1):
                break
            (written if self.process(target) == "written" else skipped).append(target)
        return written, skipped

    def step(self, stop: Stop = None) -> StepReport:
        """Check the chain's identity, reconcile the store with the chain (a rollback may have
        dropped this oracle's last band and nothing it read), ingest, then process every ready
        interval."""
        if self.read_only:
            raise RuntimeError("a read-only oracle does not step")
        self.check_chain()
        self.reconcile()
        report = StepReport(polls=self.ingest())
        report.written, report.skipped = self.process_ready(stop)
        return report

    def run(self, once: bool = False, stop: Stop = None) -> int:
        """Serve until ``stop()`` (or, with ``once``, until nothing is left to do). RPC failures
        back off from ``backoff_s`` doubling up to ``max_backoff_s`` ("chain unavailable ...",
        then "chain back after N s"); ``stop()`` ends a backoff or idle wait at once (polled
        every ``gridshare.chain.backoff.STOP_POLL_S``) and the catch-up between intervals. A
        chain reset raises ``ChainResetError``."""
        self._log_ready()
        backoff = Backoff(self.config.backoff_s, self.config.max_backoff_s)
        down_since: float | None = None
        while not stop_requested(stop):
            try:
                if down_since is not None:
                    self._recover()
                    log.info("chain back after %.1f s", time.monotonic() - down_since)
                    down_since = None
                report = self.step(stop)
                if not report.progressed and not once:
                    self._idle(stop)
            except RPC_ERRORS as exc:
                down_since = time.monotonic() if down_since is None else down_since
                delay_s = backoff.next_delay_s()
                log.warning("chain unavailable (%s); retry in %.1f s", exc, delay_s)
                if once:
                    raise
                if sleep(delay_s, stop):
                    break
                continue
            backoff.reset()
            if once and not report.progressed:
                return 0
        return 0

    def _idle(self, stop: Stop) -> None:
        """Wait until the node has a new block, at most ``poll_interval_s``."""
        head = self.chain.block_number
        deadline = time.monotonic() + self.config.poll_interval_s
        while (left_s := deadline - time.monotonic()) > 0:
            if sleep(min(BLOCK_POLL_S, left_s), stop) or self.chain.block_number != head:
                return

    def _log_ready(self) -> None:
        log.info("ready: oracle of %s on %s (chain id %d, %s), GridCapacity %s, %d "
                 "confirmation(s), next interval %s, store %s", self.deployment.feeder,
                 chain_url(self.chain), self.chain.chain_id, client_name(self.chain),
                 self.capacity.address, self.confirmations, self.next_target(), self.store.path)

    # ---- status
    def status(self) -> dict[str, Any]:
        """Processed block, lag, intervals, readings, checks, failures (``oracle.status``)."""
        from oracle.status import oracle_status

        return oracle_status(self)

    def close(self) -> None:
        self.store.close()


__all__ = ["KIND_NAMES", "OcmSettings", "Oracle", "OracleConfig", "OracleFatal",
           "compute_from_inputs", "inputs_hash", "ocm_inputs"]
