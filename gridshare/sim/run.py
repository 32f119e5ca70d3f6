"""The main job: one community day end to end on a chain (``gridshare simulate``).

Time: minutes of the feeder's profile day; market and band intervals of ``interval_s`` (15 min by
default, docs/simulation.md says why) with minute meter readings. The first interval (from
``start_hour``, default midnight) is the warm-up: the meters post it with the flexibilities idle,
so the oracle has a first source interval; the market trades the following ones. For every
traded interval k, in this order:

1. at the first interval of an hour, the aggregator (``market.aggregator.schedule_hour``)
   plans the hour's four slots with the community battery's and stations' latest on-chain bands
   as bounds (persistence over the hour) and the battery's state of charge from the chain;
2. the stations' power for k: the plan clipped to the station's band of k and to what the
   connected vehicles still need; a plan at the bound it was planned with (the older band held
   it back) takes what the band of k allows, up to the vehicles' need;
3. households and station operators sign their orders for k (EIP-712) and hand them to the
   REST API's order gateway (``market.gateway.gateway.OrderGateway.submit``: the code path of
   ``POST /v1/orders``: validation, durable SQLite store, relay to
   ``GridMarket.submitOrdersSigned``). A household orders from a persistence forecast: its net
   energy of interval k-1 (what its meter measured last), not k's, which it cannot know; a
   station operator orders its planned power, which it then executes;
4. the gateway closes k, relays its orders, and the settler commits, clears and settles k
   (``OrderGateway.settle_interval`` -> ``market.chain.MarketChain.settle_interval``);
   the battery's power is the settled ``batteryPowerW`` (inside its band by construction),
   its set point: a battery that follows the feeder (``OcmSettings.battery_follows``) gives,
   minute by minute, less where the feeder needs its discharge
   (``Simulation.followed_battery_kw``), the difference settled as its deviation;
5. the meters post k's minutes (``gridshare.sim.meters.MeterSimulator``; flexibilities at their
   executed powers) and the oracle (``oracle.service.Oracle``) ingests them and writes the
   certified bands of k+1;
6. once k has ended on the chain's clock, the oracle's key writes k's meter totals
   (``gridshare.chain.metering.write_meter_totals``) and the settler settles k's deviations,
   metered minus traded energy per member, at the imbalance tariffs
   (``MarketChain.settle_deviations``).

At the end: every settled interval and its deviations are replayed from chain data
(``MarketChain.replay``, ``MarketChain.replay_deviations``: meter totals recomputed from the
readings), the DSO audit compares every metered flexibility reading with its band on-chain, and
a sample of steps is checked with pandapower's Newton-Raphson (``gridshare.sim.verify``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from web3.contract import Contract

from capacity.ocm.policy import BandPolicy
from capacity.storage import energy_for_power
from gridshare.chain.client import Chain, connect
from gridshare.chain.config import ChainConfig
from gridshare.chain.deploy import Deployment, DeployParams, deploy
from gridshare.chain.errors import ChainError, ContractRevert
from gridshare.chain.metering import write_meter_totals
from gridshare.sim.agents import (
    StationState,
    ev_sessions,
    interval_net_wh,
    limit_prices_eur_per_kwh,
    station_power_w,
)
from gridshare.sim.community_case import SLOT_MIN, community_case
from gridshare.sim.meters import MeterSimulator, register_meters
from gridshare.units import (
    eur_per_kwh_to_price,
    kwh_to_wh,
    ppm_to_fraction,
    price_to_eur_per_kwh,
    w_to_kw,
    wh_to_kwh,
)
from market.battery import BatteryInfeasibleError
from market.chain import MarketChain, SettlementError, default_battery_params
from market.gateway.gateway import GatewaySettings, OrderGateway
from market.gateway.store import OrderStore
from market.orders import Order, OrderError, Side, sign_order
from market.settlement import GRID_ADDRESS
from oracle.service import OcmSettings, Oracle, OracleConfig
from oracle.state import feeder_model, feeder_profiles

log = logging.getLogger(__name__)

#: The relayer of signed orders (the market operator's account; the REST API relays the same).
RELAYER_ROLE = "settler"
ORDER_DEADLINE_S = 3600
#: The oracle's forecast (``oracle.forecast``): "ramps" certifies each band for the last minute
#: of the source interval and for the worst ramps of the same interval on previous days, so it
#: holds while the evening load rises within the interval.
OCM_FORECAST = "ramps"
#: Share of the previous days' ramps each band covers (``OcmSettings.ramp_coverage``): the
#: worst 5 % of 28 days' ramps (a cloud removing all PV in minutes) would make the battery
#: discharge on every sunny interval, just in case (docs/oracle.md has the trade-off).
RAMP_COVERAGE = 0.95
#: Hours of needed battery discharge the oracle's bands keep in the battery (``oracle.battery``):
#: the market can never sell the energy the evening peak's forced discharge will take.
BATTERY_RESERVE_H = 8.0


#: Power per charging station the battery reserve funds (``OcmSettings.reserve_station_kw``):
#: a 32 A single-phase charger's 7.4 kW, between the guarantee (4.2 kW: the vehicles got 95.1 %
#: of their energy) and the rating (the reserve then fills the battery all day and the market
#: trades 47 instead of 184 kWh through it); docs/simulation.md has the runs.
RESERVE_STATION_KW = 7.4


def default_ocm(**overrides: Any) -> OcmSettings:
    """The simulation's oracle settings: the ``ramps`` forecast, the product band policy
    (objective ``fair``), the battery reserve funding the stations at ``RESERVE_STATION_KW``
    and a battery that follows the feeder; ``overrides`` replace any of them."""
    return OcmSettings(**{"forecast": OCM_FORECAST, "ramp_coverage": RAMP_COVERAGE,
                          "objective": "fair", "band_policy": BandPolicy(),
                          "battery_reserve_h": BATTERY_RESERVE_H, "battery_follows": True,
                          "reserve_station_kw": RESERVE_STATION_KW, **overrides})


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Times in hours / seconds / minutes as named."""

    feeder: str = "heimschuh-like"
    chain: str = "embedded"
    hours: float = 24.0
    start_hour: float = 0.0
    seed: int = 0
    interval_s: int = 900
    readings_batch_min: int = 15
    ocm: OcmSettings = field(default_factory=default_ocm)
    nr_steps: int = 48
    nr_random_points: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.interval_s % 60 or (SLOT_MIN * 60) % self.interval_s:
            raise ValueError(f"interval_s must be a multiple of 60 s dividing 15 min, got "
                             f"{self.interval_s}")
        n_min = self.interval_s // 60
        if not 0 < self.hours <= 24 or round(self.hours * 60) < 2 * n_min:
            raise ValueError(f"hours must lie in (0, 24] and cover at least two intervals "
                             f"(warm-up and one traded), got {self.hours}")
        start_min = round(self.start_hour * 60)
        if start_min < 0 or start_min % n_min or start_min + round(self.hours * 60) > 1440:
            raise ValueError(f"start_hour must be a whole number of intervals from midnight "
                             f"with start_hour + hours <= 24, got {self.start_hour}")
        if self.readings_batch_min < 1 or n_min % self.readings_batch_min:
            raise ValueError(f"readings_batch_min must divide the {n_min} minutes of an "
                             f"interval, got {self.readings_batch_min}")
        if self.nr_steps < 0 or self.nr_random_points < 0:
            raise ValueError("nr_steps and nr_random_points must be >= 0")


@dataclass
class IntervalRecord:
    """What happened in one traded interval (on-chain units: W, Wh, micro-EUR/kWh)."""

    index: int
    interval: int
    first_minute: int
    n_orders: int = 0
    n_rejected_orders: int = 0
    settled: bool = False
    note: str = ""
    clearing_price_micro_eur_per_kwh: int | None = None
    battery_power_w: int = 0
    soc_after_wh: int = 0
    local_wh: int = 0
    battery_charge_wh: int = 0
    battery_discharge_wh: int = 0
    grid_import_wh: int = 0
    grid_export_wh: int = 0
    unmatched_wh: int = 0
    flex_p_w: dict[str, int] = field(default_factory=dict)
    band_w: dict[str, tuple[int, int]] = field(default_factory=dict)
    plan_kw: dict[str, float] = field(default_factory=dict)
    settle_tx: str = ""
    gas_orders: int = 0
    gas_settle: int = 0
    gas_readings: int = 0
    replay_equal: bool | None = None
    reserve_wh: int | None = None  # the battery reserve the oracle's band keeps at the end
    reserve_kept: bool | None = None  # False: no band kept it (the grid needed the battery)
    battery_tier: str | None = None  # oracle.battery.TIERS: which of the battery's floors held
    deviations_settled: bool = False
    metered_import_wh: int = 0  # members' metered consumption (battery included)
    metered_export_wh: int = 0
    deviation_buy_wh: int = 0  # bought from the grid at the imbalance-buy tariff
    deviation_sell_wh: int = 0
    deviation_paid_nano_eur: int = 0  # what the accounts paid for deviations, net
    gas_deviations: int = 0  # meter totals and deviation settlement


@dataclass
class SimulationResult:
    """Everything the report and the summary need."""

    config: SimulationConfig
    deployment: Deployment
    chain_id: int
    day_start_s: int
    minutes_per_interval: int
    flex_names: list[str]
    intervals: list[IntervalRecord]
    aggregator: list[dict[str, Any]]
    statements: list[dict[str, Any]]
    audit: dict[str, Any]
    nr_check: dict[str, Any]
    nr_operated: dict[str, Any]
    oracle_status: dict[str, Any]
    ev: list[dict[str, Any]]
    summary: dict[str, Any]
    band_steps: Any = None  # capacity.ocm.BandResult of the recomputed OCM steps (report)
    band_step_hours: np.ndarray | None = None
    band_step_ul_kw: np.ndarray | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


class Simulation:
    """Runs one simulated day (see module docstring)."""

    def __init__(self, config: SimulationConfig, out_dir: Path,
                 chain: Chain | None = None) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.chain = chain if chain is not None else connect(ChainConfig(chain=config.chain))
        self.timings: dict[str, float] = {}
        self.n_min = config.interval_s // 60

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Deploy, register meters, station operators and battery shares; build the agents."""
        t0 = time.perf_counter()
        self._deploy()
        self.meter_setup = register_meters(self.chain, self.deployment)
        market = self.deployment.market(self.chain)
        self._register_members(market)
        self._open_market(market)
        self.gateway = OrderGateway(self.mc, OrderStore(_fresh_db(self.out_dir / "orders.sqlite")),
                                    GatewaySettings(relayer=RELAYER_ROLE))
        self._start_oracle_and_meters()
        self._build_agents()
        self.readings_receipts: list[Any] = []
        self.plan_kw: dict[str, np.ndarray] = {}
        self.plan_bound_kw: dict[str, float] = {}
        self.aggregator_log: list[dict[str, Any]] = []
        self.timings["setup"] = time.perf_counter() - t0

    def _deploy(self) -> None:
        """Deploy the contracts for the feeder (it needs a community battery), write
        ``deployment.json``; load the feeder model, its profiles and its flexibilities."""
        from capacity.feeders import feeder_case

        cfg = self.config
        self.case = feeder_case(cfg.feeder)
        if not any(f.kind.value == "community_battery" for f in self.case.flexibilities):
            raise ValueError(f"feeder {cfg.feeder!r} has no community battery; the simulation "
                             "settles the battery inside its band")
        self.deployment = deploy(self.chain, DeployParams(feeder=cfg.feeder,
                                                          interval_s=cfg.interval_s))
        self.deployment.save(self.out_dir / "deployment.json")
        self.feeder = feeder_model(cfg.feeder)
        self.profiles = feeder_profiles(cfg.feeder, cfg.seed)
        self.flex = list(self.case.flexibilities)
        self.flex_names = [f.name for f in self.flex]
        self.flex_ids = {f.name: self.deployment.device_id(f.name) for f in self.flex}
        self.battery_name = next(f.name for f in self.flex
                                 if f.kind.value == "community_battery")
        self.station_names = [f.name for f in self.flex if f.kind.value == "charging_station"]
        self.battery_col = self.flex_names.index(self.battery_name)
        # (n_flex, n_bus) 0/1: the bus of each flexibility, ``flex_names`` order
        self.flex_incidence = np.zeros((len(self.flex), len(self.feeder.bus_ids)))
        self.flex_incidence[np.arange(len(self.flex)),
                            self.feeder.bus_positions([f.bus_id for f in self.flex])] = 1.0

    def _register_members(self, market: Contract) -> None:
        """The members: the deployed households (``prosumer_i``) and one operator per charging
        station, registered as a prosumer now."""
        chain = self.chain
        self.members = [p["address"] for p in self.deployment.prosumers]
        self.member_keys = [chain.keys.account(p["role"]) for p in self.deployment.prosumers]
        self.member_names = [p["name"] for p in self.deployment.prosumers]
        self.n_households = len(self.members)
        for j, name in enumerate(self.station_names):
            account = chain.keys.account(f"prosumer_{self.n_households + j}")
            chain.transact(market.functions.registerProsumer(  # metered by its station
                account.address, self.flex_ids[name]), "deployer")
            self.members.append(account.address)
            self.member_keys.append(account)
            self.member_names.append(f"{name} operator")

    def _open_market(self, market: Contract) -> None:
        """Equal battery shares (bps) for the households, the market adapter, the tariffs
        (EUR/kWh) and the households' limit prices."""
        share_bps = 10_000 // self.n_households
        shares = {}
        for address in self.members[:self.n_households]:
            self.chain.transact(market.functions.setBatteryShare(address, share_bps), "deployer")
            shares[address] = share_bps
        battery = dataclasses.replace(default_battery_params(self.deployment), shares_bps=shares)
        self.mc = MarketChain(self.chain, self.deployment, battery)
        self.market_params = self.mc.params()
        prices = self.deployment.prices_micro_eur_per_kwh
        self.retail_eur = float(price_to_eur_per_kwh(prices["retail"]))
        self.feed_in_eur = float(price_to_eur_per_kwh(prices["feed_in"]))
        self.buy_limit, self.sell_limit = limit_prices_eur_per_kwh(
            self.n_households, self.retail_eur, self.feed_in_eur, self.config.seed)

    def _start_oracle_and_meters(self) -> None:
        """The oracle with a fresh store, and the meters (flexibilities at ``flex_kw``, kW per
        minute of the day)."""
        cfg = self.config
        db = _fresh_db(self.out_dir / "oracle.sqlite")
        # confirmations 0: the meters and the oracle take turns in this process, the oracle
        # stepping after the meters' receipts (no block of them is still to come)
        self.oracle = Oracle(self.chain, self.deployment,
                             OracleConfig(db_path=str(db), ocm=cfg.ocm, forecast_seed=cfg.seed,
                                          confirmations=0),
                             feeder=self.feeder)
        self.flex_kw = np.zeros((self.profiles.p_kw.shape[0], len(self.flex)))
        self.meters = MeterSimulator(self.chain, self.deployment, self.meter_setup, seed=cfg.seed,
                                     flex_p_kw=lambda m: self.flex_kw[np.asarray(m)])
        self.day_start_s = self.meters.day_start_s

    def _build_agents(self) -> None:
        """The charging sessions and stations, and the aggregator's community case (kW, kWh)."""
        stations = [(f.name, float(f.p_high_kw)) for f in self.flex
                    if f.name in self.station_names]
        self.sessions = ev_sessions(stations, self.config.seed)
        self.stations = {name: StationState(name, self.sessions) for name in self.station_names}
        cb = self.mc.battery
        cb_flex = self.flex[self.flex_names.index(self.battery_name)]
        self.agg_case = community_case(
            self.profiles.load_kw, self.profiles.pv_kw,
            battery_capacity_kwh=wh_to_kwh(cb.capacity_wh),
            battery_soc_min_kwh=wh_to_kwh(cb.soc_min_wh),
            battery_soc_max_kwh=wh_to_kwh(cb.soc_max_wh),
            battery_initial_kwh=wh_to_kwh(cb.initial_soc_wh),
            battery_p_kw=float(max(-cb_flex.p_low_kw, cb_flex.p_high_kw)),
            battery_eff=ppm_to_fraction(cb.charge_efficiency_ppm), stations=stations,
            sessions=self.sessions, retail_eur_per_kwh=self.retail_eur,
            feed_in_eur_per_kwh=self.feed_in_eur)

    # ------------------------------------------------------------------ helpers
    def interval_id(self, first_minute: int) -> int:
        return self.meters.timestamp(first_minute) // self.config.interval_s

    def band_w(self, interval: int) -> dict[str, tuple[int, int]]:
        """Band (P_min, P_max) in W of every flexibility for ``interval`` (from the chain). A
        device without a band (the oracle skipped the interval) stays at rest: (0, 0); the
        market cannot settle an interval without the battery's band (``intervals_not_settled``
        then names it)."""
        capacity = self.mc.capacity
        out = {}
        for name, device_id in self.flex_ids.items():
            try:
                lo, hi, _ = self.chain.call(capacity.functions.bandOf(device_id, int(interval)))
            except ContractRevert as exc:
                if exc.error_name != "NoBand":
                    raise
                lo = hi = 0
            out[name] = (int(lo), int(hi))
        return out

    def followed_battery_kw(self, minutes: np.ndarray, flex_kw: np.ndarray,
                            p_min_kw: float | np.ndarray) -> np.ndarray:
        """The battery's power (kW) at ``minutes`` when it follows the feeder
        (``OcmSettings.battery_follows``): the highest in ``[p_min_kw, set point]`` keeping
        every bus at ``v_low`` plus OCM's margin (``capacity.reserve.highest_power_kw``), the
        set point its column of ``flex_kw`` (S, n_flex), the others there as they are."""
        from capacity.reserve import highest_power_kw

        flex_kw = np.atleast_2d(flex_kw)
        others = flex_kw.copy()
        others[:, self.battery_col] = 0.0
        p_kw = self.profiles.p_kw[minutes] + others @ self.flex_incidence
        ocm = self.config.ocm
        set_kw = flex_kw[:, self.battery_col]
        return highest_power_kw(self.feeder, self.flex[self.battery_col].bus_id, p_kw,
                                self.profiles.q_kvar[minutes], abs(self.feeder.slack.vm_pu),
                                ocm.v_low_pu, np.minimum(p_min_kw, set_kw), set_kw,
                                ocm.margin_pu)

    def soc_wh(self) -> int:
        return self.mc.soc_before(self.mc.settlements(), self.config.interval_s)

    def post_minutes(self, first: int, rec: IntervalRecord | None) -> None:
        """Post the minutes of one interval in batches and declare the vehicles that arrived in
        it, then let the oracle step."""
        batch = self.config.readings_batch_min
        for m0 in range(first, first + self.n_min, batch):
            receipts = self.meters.post(range(m0, m0 + batch))
            self.readings_receipts.extend(receipts)
            if rec is not None:
                rec.gas_readings += sum(int(r["gasUsed"]) for r in receipts)
        arriving = [(v.station, v.arrive_min, v.depart_min, int(kwh_to_wh(v.energy_kwh)))
                    for v in self.sessions if first <= v.arrive_min < first + self.n_min]
        if arriving:  # each charger declares its vehicle (oracle.sessions)
            self.meters.declare_sessions(arriving)
        t0 = time.perf_counter()
        self.oracle.step()
        self.timings["oracle"] = self.timings.get("oracle", 0.0) + time.perf_counter() - t0

    # ------------------------------------------------------------------ aggregator
    def plan_hour(self, hour: int, interval: int) -> None:
        """Schedule ``hour`` with the latest bands as bounds (see module docstring)."""
        from market.aggregator import schedule_hour

        t0 = time.perf_counter()
        case = self.agg_case
        sph = case.slots_per_hour
        slots = np.arange(hour * sph, (hour + 1) * sph)
        bands = self.band_w(interval)
        ess_lo = np.tile(-case.ess.p_discharge_max_kw, 1)
        ess_hi = np.array(case.ess.p_charge_max_kw)
        cs_lo = np.zeros_like(case.cs.p_charge_max_kw)
        cs_hi = np.array(case.cs.p_charge_max_kw)
        lo_kw, hi_kw = (w_to_kw(np.array(bands[self.battery_name][0])),
                        w_to_kw(np.array(bands[self.battery_name][1])))
        ess_lo[0, slots] = np.clip(lo_kw, ess_lo[0, slots], ess_hi[0, slots])
        ess_hi[0, slots] = np.clip(hi_kw, ess_lo[0, slots], ess_hi[0, slots])
        for j, name in enumerate(self.station_names):
            lo, hi = bands[name]
            cs_lo[j, slots] = np.minimum(max(float(w_to_kw(lo)), 0.0), cs_hi[j, slots])
            cs_hi[j, slots] = np.minimum(float(w_to_kw(hi)), cs_hi[j, slots])
        soc_kwh = wh_to_kwh(self.soc_wh())
        e_cs = np.array([self.stations[n].fleet_energy_kwh(hour * 60)
                         for n in self.station_names])
        entry: dict[str, Any] = {"hour": hour, "interval": interval, "soc_kwh": soc_kwh,
                                 "bands_w": {k: list(v) for k, v in bands.items()}}
        result = None
        try:
            banded = case.with_bands(ess_lo, ess_hi, cs_lo, cs_hi)
            result = schedule_hour(banded, hour, e_init_kwh=self._e_init(banded, hour, soc_kwh,
                                                                          e_cs))
            entry["bounded_by_bands"] = True
        except (ValueError, RuntimeError) as exc:
            # the bands make a vehicle's or the battery's targets unreachable (or the hour
            # infeasible): plan without them; execution clips to the bands
            entry["bounded_by_bands"] = False
            entry["note"] = f"bands not usable as bounds ({exc}); plan clipped to the bands"
            try:
                result = schedule_hour(case, hour, e_init_kwh=self._e_init(case, hour, soc_kwh,
                                                                            e_cs))
            except (ValueError, RuntimeError) as exc2:
                entry["note"] += f"; unbounded plan failed too ({exc2}): stations charge as " \
                                 "needed, battery plan 0"
        # a station's plan at this bound was held back by the band it was planned with; a plan
        # without the bands (they made a vehicle's target unreachable) is behind at any power
        self.plan_bound_kw = {name: float(cs_hi[j, slots[0]]) if entry["bounded_by_bands"]
                              else 0.0 for j, name in enumerate(self.station_names)}
        if result is not None:
            p = result.p_kw
            self.plan_kw = {self.battery_name: (p["ess_ch"] - p["ess_dis"])[0]}
            for j, name in enumerate(self.station_names):
                self.plan_kw[name] = (p["cs_ch"] - p["cs_dis"])[j]
            entry.update(cost_eur=float(result.cost), solve_time_s=float(result.solve_time_s),
                         cost_breakdown_eur=result.cost_breakdown_eur)
        else:
            rated = {f.name: float(f.p_high_kw) for f in self.flex}
            self.plan_kw = {name: np.full(sph, rated[name] if name in self.station_names
                                          else 0.0) for name in self.flex_names}
            entry.update(cost_eur=float("nan"), solve_time_s=0.0, cost_breakdown_eur={})
        self.plan_first_minute = hour * 60
        entry["plan_kw"] = {k: [float(x) for x in v] for k, v in self.plan_kw.items()}
        self.aggregator_log.append(entry)
        self.timings["aggregator"] = self.timings.get("aggregator", 0.0) + \
            time.perf_counter() - t0

    @staticmethod
    def _e_init(case: Any, hour: int, soc_kwh: float, e_cs: np.ndarray | None
                ) -> dict[str, np.ndarray]:
        """Initial energies for the hour, clipped into the case's feasible window: battery from
        the chain, stations from their vehicles' energy (``StationState.fleet_energy_kwh``)."""
        sph = case.slots_per_hour
        first = hour * sph
        ess = np.clip([soc_kwh], case.ess_e_req_kwh[:, first], case.ess_e_cap_kwh[:, first])
        cs = np.array(case.cs.e_init_kwh) if e_cs is None else e_cs
        cs = np.clip(cs, case.cs_e_req_kwh[:, first], case.cs_e_cap_kwh[:, first])
        return {"ess": ess, "cs": cs}

    # ------------------------------------------------------------------ orders
    def submit(self, rec: IntervalRecord, member: int, side: Side, energy_wh: int,
               price_eur_per_kwh: float, deadline_unix_s: int) -> None:
        """Sign one order and hand it to the API's order gateway (validation, durable store,
        relay to ``GridMarket.submitOrdersSigned``): the code path of ``POST /v1/orders``."""
        if energy_wh <= 0:
            return
        address = self.members[member]
        order = Order(address, rec.interval, side, int(energy_wh),
                      int(eur_per_kwh_to_price(price_eur_per_kwh)),
                      self.gateway.expected_nonce(address), deadline_unix_s)
        signature = sign_order(order, self.mc.domain, self.member_keys[member].key)
        try:
            self.gateway.submit(order, signature)
        except OrderError as exc:
            rec.n_rejected_orders += 1
            log.warning("order of %s refused: %s", address, exc)
            return
        rec.n_orders += 1

    def deadline_unix_s(self) -> int:
        """Deadline of this interval's orders: an hour after now (wall clock or chain time,
        whichever is later)."""
        block_s = int(self.chain.w3.eth.get_block("latest")["timestamp"])
        return max(block_s, int(time.time())) + ORDER_DEADLINE_S

    # ------------------------------------------------------------------ one interval
    def run_interval(self, index: int) -> IntervalRecord:
        first = index * self.n_min
        interval = self.interval_id(first)
        rec = IntervalRecord(index=index, interval=interval, first_minute=first)
        if first % 60 == 0 or not self.plan_kw:
            self.plan_hour(first // 60, interval)
        bands = self.band_w(interval)
        rec.band_w = bands
        self._record_reserve(rec)
        slot = (first - self.plan_first_minute) // SLOT_MIN
        # stations: plan clipped to the band and to the vehicles' needs; a plan held back by
        # the (older) band it was planned with takes the room the band of k gives
        for name in self.station_names:
            plan = float(self.plan_kw[name][min(slot, len(self.plan_kw[name]) - 1)])
            rec.plan_kw[name] = plan
            need = self.stations[name].max_power_kw(first, self.n_min)
            p_w = station_power_w(plan, self.plan_bound_kw[name], need, bands[name])
            rec.flex_p_w[name] = p_w
        rec.plan_kw[self.battery_name] = float(
            self.plan_kw[self.battery_name][min(slot, len(self.plan_kw[self.battery_name]) - 1)])
        self.place_orders(rec)
        # relay, commitment, clearing and settlement
        t0 = time.perf_counter()
        try:
            result, receipt = self.gateway.settle_interval(interval)
            rec.gas_orders = self._order_gas(interval)
            rec.settled = True
            rec.settle_tx = receipt["transactionHash"].to_0x_hex()
            rec.gas_settle = int(receipt["gasUsed"])
            rec.clearing_price_micro_eur_per_kwh = int(result.clearing_price_micro_eur_per_kwh)
            rec.battery_power_w = int(result.battery_power_w)
            self._account_trades(rec, result.trades)
        except (SettlementError, BatteryInfeasibleError, ChainError) as exc:
            lo, hi = bands[self.battery_name]
            rec.battery_power_w = int(np.clip(0, lo, hi))
            rec.note = f"not settled: {exc}"
            log.warning("interval %d not settled: %s", interval, exc)
        self.timings["settle"] = self.timings.get("settle", 0.0) + time.perf_counter() - t0
        rec.flex_p_w[self.battery_name] = rec.battery_power_w
        rec.soc_after_wh = self.soc_wh()
        traded = {name: 0.0 for name in self.flex_names}
        for name in self.flex_names:
            traded[name] = float(w_to_kw(rec.flex_p_w[name]))
        self.flex_kw[first:first + self.n_min] = [traded[n] for n in self.flex_names]
        if self.config.ocm.battery_follows:
            minutes = np.arange(first, first + self.n_min)
            self.flex_kw[minutes, self.battery_col] = self.followed_battery_kw(
                minutes, self.flex_kw[minutes], w_to_kw(bands[self.battery_name][0]))
        for name in self.station_names:
            self.stations[name].deliver(first, self.n_min, traded[name])
        # meters and oracle, then the interval's deviations
        self.post_minutes(first, rec)
        self.settle_deviations(rec)
        return rec

    def _record_reserve(self, rec: IntervalRecord) -> None:
        """The battery reserve the oracle's band for ``rec``'s interval keeps (its stored
        inputs), whether the band kept it, and the battery's tier (``oracle.battery.TIERS``)."""
        row = self.oracle.store.interval(rec.interval)
        if row is None or not row.inputs_json:
            return
        battery = row.inputs.get("battery")
        if battery is not None:
            rec.reserve_wh = int(battery["reserve_wh"])
            rec.reserve_kept = row.bands.get("reserve_kept")
            rec.battery_tier = row.bands.get("battery_tier")

    def place_orders(self, rec: IntervalRecord) -> None:
        """The members' orders for ``rec``'s interval: households from the persistence forecast
        (their net energy of the interval before, Wh), station operators their planned energy."""
        first = rec.first_minute
        before = np.arange(first - self.n_min, first)
        net_wh = interval_net_wh(self.profiles.load_kw, self.profiles.pv_kw, before)
        deadline = self.deadline_unix_s()
        for i in range(self.n_households):
            if net_wh[i] > 0:
                self.submit(rec, i, Side.BUY, int(net_wh[i]), float(self.buy_limit[i]), deadline)
            elif net_wh[i] < 0:
                self.submit(rec, i, Side.SELL, int(-net_wh[i]), float(self.sell_limit[i]),
                            deadline)
        for j, name in enumerate(self.station_names):
            energy = int(energy_for_power(rec.flex_p_w[name], self.config.interval_s))
            self.submit(rec, self.n_households + j, Side.BUY, energy, self.retail_eur, deadline)

    def settle_deviations(self, rec: IntervalRecord) -> None:
        """Write the meter totals of ``rec``'s interval (oracle key) and settle its deviations
        (settler key); record the metered and deviation energies (Wh) and money (nano-euro)."""
        t0 = time.perf_counter()
        try:
            _, totals_receipt = write_meter_totals(self.chain, self.mc.metering, rec.interval)
            receipt = self.mc.settle_deviations(rec.interval)
        except (SettlementError, ChainError) as exc:
            rec.note = "; ".join(filter(None, [rec.note, f"deviations not settled: {exc}"]))
            log.warning("interval %d: deviations not settled: %s", rec.interval, exc)
            return
        rec.deviations_settled = True
        rec.gas_deviations = int(totals_receipt["gasUsed"]) + int(receipt["gasUsed"])
        for d in self.mc.deviations(rec.interval):
            rec.metered_import_wh += max(d.metered_wh, 0)
            rec.metered_export_wh += max(-d.metered_wh, 0)
            rec.deviation_buy_wh += max(d.deviation_wh, 0)
            rec.deviation_sell_wh += max(-d.deviation_wh, 0)
            rec.deviation_paid_nano_eur += d.paid_nano_eur
        self.timings["deviations"] = self.timings.get("deviations", 0.0) + \
            time.perf_counter() - t0

    def _order_gas(self, interval: int) -> int:
        """Gas of the relayed orders of ``interval``: each transaction that carried some of
        them counts pro rata of its orders (a batch emits one ``OrderPlaced`` or
        ``OrderRejected`` per order), so a batch shared with another interval is not counted
        twice."""
        counts = Counter(r.tx_hash for r in self.gateway.store.of_interval(interval)
                         if r.tx_hash)
        market = self.mc.market.address
        gas = 0
        for tx_hash, n in counts.items():
            receipt = self.chain.w3.eth.get_transaction_receipt(tx_hash)
            n_orders = sum(1 for e in receipt["logs"] if e["address"] == market)
            gas += int(receipt["gasUsed"]) * n // max(n_orders, n)
        return gas

    def _account_trades(self, rec: IntervalRecord, trades: Any) -> None:
        battery = self.mc.battery.account
        for t in trades:
            if t.buyer == GRID_ADDRESS:
                rec.grid_export_wh += t.energy_wh
            elif t.seller == GRID_ADDRESS:
                rec.grid_import_wh += t.energy_wh
            elif t.buyer == battery:
                rec.battery_charge_wh += t.energy_wh
            elif t.seller == battery:
                rec.battery_discharge_wh += t.energy_wh
            else:
                rec.local_wh += t.energy_wh

    # ------------------------------------------------------------------ the day
    def run(self, on_interval: Callable[[IntervalRecord], None] | None = None
            ) -> SimulationResult:
        """Set up, run the day, verify; returns the result (the report is written by the CLI)."""
        from gridshare.sim.verify import finish

        self.setup()
        n_intervals = round(self.config.hours * 60) // self.n_min
        first_index = round(self.config.start_hour * 60) // self.n_min
        t0 = time.perf_counter()
        self.post_minutes(first_index * self.n_min, None)  # warm-up: flexibilities idle
        records = []
        bar = _progress(n_intervals - 1, self.config.progress, self.day_start_s, self.n_min)
        try:
            for index in range(first_index + 1, first_index + n_intervals):
                rec = self.run_interval(index)
                records.append(rec)
                if bar is not None:
                    bar.update(1)
                    price = rec.clearing_price_micro_eur_per_kwh
                    bar.set_postfix_str(
                        f"{(rec.first_minute + self.n_min) // 60:02d}:"
                        f"{(rec.first_minute + self.n_min) % 60:02d} "
                        f"price {'-' if price is None else f'{price_to_eur_per_kwh(price):.3f}'} "
                        f"CB {w_to_kw(rec.battery_power_w):+.1f} kW", refresh=False)
                if on_interval is not None:
                    on_interval(rec)
        finally:
            if bar is not None:
                bar.close()
        self.timings["day"] = time.perf_counter() - t0
        return finish(self, records)


def _fresh_db(path: Path) -> Path:
    """``path`` of an SQLite database with the files of an earlier run (and its -wal/-shm)
    removed."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return path


def _progress(total: int, enabled: bool, day_start_s: int, n_min: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="interval", desc="simulated day", dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                           "[{elapsed}<{remaining}] {postfix}")
