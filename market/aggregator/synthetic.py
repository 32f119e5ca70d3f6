"""A synthetic case of the paper's size (Sec. 3): 116 DG, 7 ESS, 5 EV charging stations, 90 loads.

Deterministic from a seed. The mix follows the paper's description of the 180-bus network:
PV and wind are the non-dispatchable DG (80 units), biomass, CHP, small hydro and fuel cells the
dispatchable DG (36 units); one external supplier at the substation; a wholesale market with
hourly day-ahead prices and a local energy market (Fig. 3b shapes); direct load control at 0.05
EUR/kWh; ESS discharge 0.01 EUR/kWh and EV discharge 0.18 EUR/kWh. The day-ahead plan (the
paper's input from ref. [12]) is the optimum of the whole day on the day-ahead forecasts; the
marginal value of stored energy at every slot boundary is the dual of the storage balance in the
LP relaxation of that day model.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np

from market.aggregator.case import SLOT_H, Case, DayAheadPlan, StorageFleet
from market.aggregator.model import FLEETS, ModelOptions, build_model
from market.aggregator.schedule import day_horizon, schedule_day
from market.aggregator.solve import equality_duals

N_SLOTS = 96
N_PV, N_WIND, N_BIOMASS, N_OTHER_DG = 60, 20, 16, 20
N_ESS, N_CS, N_LOAD = 7, 5, 90
ESS_E_MAX_KWH = (400.0, 1200.0)
VEHICLE_BATTERY_KWH = 50.0
CHARGER_KW = 11.0


def _bump(hour: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-(((hour - centre) / width) ** 2))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """AR(1) noise along the slots, vectorised over units."""
    shocks = rng.normal(0.0, scale, size=shape)
    out = np.empty(shape)
    out[:, 0] = shocks[:, 0]
    for t in range(1, shape[1]):  # 96 steps, vectorised over units
        out[:, t] = 0.9 * out[:, t - 1] + shocks[:, t] * np.sqrt(1 - 0.81)
    return out


def _charging_stations(rng: np.random.Generator, hour: np.ndarray) -> StorageFleet:
    """Aggregated vehicle groups per station: connected capacity, energy needs and trip flows."""
    n_slots = hour.size
    cap = np.zeros((N_CS, n_slots))
    need = np.zeros((N_CS, n_slots))
    flow = np.zeros((N_CS, n_slots))
    e0 = np.zeros(N_CS)
    p_max = np.zeros(N_CS)
    slot = np.arange(n_slots)
    for cs in range(N_CS):  # five stations, each with two vehicle groups
        residential = cs < 3
        for _ in range(2):
            n_veh = int(rng.integers(8, 20))
            if residential:
                arrive = int(rng.integers(17 * 4, 21 * 4))
                depart = int(rng.integers(6 * 4, 9 * 4))
            else:
                arrive = int(rng.integers(7 * 4, 10 * 4))
                depart = int(rng.integers(16 * 4, 19 * 4))
            soc_arr, soc_dep, soc_min = rng.uniform(0.25, 0.45), 0.85, 0.2
            e_veh = n_veh * VEHICLE_BATTERY_KWH
            wraps = arrive > depart
            connected = ((slot >= arrive) | (slot < depart)) if wraps else (
                (slot >= arrive) & (slot < depart))
            cap[cs] += connected * e_veh
            need[cs] += connected * e_veh * soc_min
            need[cs, depart - 1] += e_veh * (soc_dep - soc_min)
            flow[cs, arrive] += e_veh * soc_arr
            flow[cs, depart] -= e_veh * soc_dep
            if wraps:
                e0[cs] += e_veh * soc_arr
            p_max[cs] += n_veh * CHARGER_KW * 0.7
    connected_any = cap > 0
    p_ch = connected_any * np.minimum(p_max[:, None], cap / VEHICLE_BATTERY_KWH * CHARGER_KW)
    return StorageFleet(
        name="cs", e_min_kwh=need, e_max_kwh=cap, flow_kwh=flow, p_charge_max_kw=p_ch,
        p_discharge_max_kw=0.5 * p_ch, eff_charge=np.full(N_CS, 0.92),
        eff_discharge=np.full(N_CS, 0.92), discharge_cost_eur_per_kwh=np.full(N_CS, 0.18),
        e_init_kwh=e0, value_end_eur_per_kwh=np.full(N_CS, 0.06))


def synthetic_data(seed: int = 0) -> Case:
    """The paper-size case without its day-ahead plan (see :func:`synthetic_case`)."""
    rng = np.random.default_rng(seed)
    hour = (np.arange(N_SLOTS) + 0.5) * SLOT_H
    # loads: residential/commercial daily shape, per-load size and smooth noise
    shape = (0.55 + 0.22 * _bump(hour, 8.5, 2.0) + 0.45 * _bump(hour, 19.5, 2.5)
             + 0.18 * _bump(hour, 13.0, 3.0))
    shape = shape / shape.mean()
    size_kw = rng.lognormal(np.log(100.0), 0.5, N_LOAD)
    load = size_kw[:, None] * shape[None, :] * (1 + _smooth_noise(rng, (N_LOAD, N_SLOTS), 0.05))
    # non-dispatchable DG: PV and wind
    clouds = 1 + _smooth_noise(rng, (1, N_SLOTS), 0.1)
    pv_shape = np.clip(np.sin(np.pi * (hour - 6.5) / 13.0), 0, None) ** 1.2 * clouds
    pv_kw = rng.uniform(0.5, 1.0, N_PV) * 7000.0 / (0.75 * N_PV)
    wind_shape = np.clip(0.32 + 0.12 * np.sin(2 * np.pi * (hour + rng.uniform(0, 24)) / 24)
                         + 0.15 * _smooth_noise(rng, (N_WIND, N_SLOTS), 1.0), 0, 1)
    wind_kw = rng.uniform(0.5, 1.0, N_WIND) * 6000.0 / (0.75 * N_WIND)
    res = np.vstack([pv_kw[:, None] * np.clip(pv_shape, 0, 1), wind_kw[:, None] * wind_shape])
    res_cost = np.concatenate([rng.uniform(0.05, 0.08, N_PV), rng.uniform(0.04, 0.07, N_WIND)])
    # dispatchable DG: biomass (cheaper, larger) and others
    dg_p_max = np.concatenate([rng.uniform(80, 150, N_BIOMASS), rng.uniform(60, 240, N_OTHER_DG)])
    dg_cost = np.concatenate([rng.uniform(0.07, 0.10, N_BIOMASS),
                              rng.uniform(0.09, 0.22, N_OTHER_DG)])
    dg_p_min = np.concatenate([0.3 * dg_p_max[:N_BIOMASS], np.zeros(N_OTHER_DG)])
    # prices (Fig. 3b): supplier per slot, wholesale hourly, local market around wholesale
    supplier_price = (0.085 + 0.03 * _bump(hour, 9.0, 2.5) + 0.07 * _bump(hour, 19.5, 2.2)
                      + 0.02 * _bump(hour, 13.5, 3.0))
    hourly = np.arange(24) + 0.5
    wm_hourly = (0.045 + 0.03 * _bump(hourly, 9.0, 2.5) + 0.075 * _bump(hourly, 19.5, 2.2)
                 + 0.02 * _bump(hourly, 13.5, 3.0)) * rng.uniform(0.95, 1.05, 24)
    wm_price = np.repeat(wm_hourly, 4)
    lem_jitter = rng.uniform(-0.003, 0.003, N_SLOTS)
    # storage: seven ESS of 0.4..1.2 MWh at C/3
    e_max = rng.uniform(*ESS_E_MAX_KWH, N_ESS)
    ess = StorageFleet(
        name="ess", e_min_kwh=np.repeat(0.1 * e_max[:, None], N_SLOTS, axis=1),
        e_max_kwh=np.repeat(e_max[:, None], N_SLOTS, axis=1), flow_kwh=np.zeros((N_ESS, N_SLOTS)),
        p_charge_max_kw=np.repeat(e_max[:, None] / 3, N_SLOTS, axis=1),
        p_discharge_max_kw=np.repeat(e_max[:, None] / 3, N_SLOTS, axis=1),
        eff_charge=np.full(N_ESS, 0.95), eff_discharge=np.full(N_ESS, 0.95),
        discharge_cost_eur_per_kwh=np.full(N_ESS, 0.01), e_init_kwh=0.5 * e_max,
        value_end_eur_per_kwh=np.full(N_ESS, 0.06))
    return Case(
        slot_h=SLOT_H, dg_p_min_kw=dg_p_min, dg_p_max_kw=dg_p_max, dg_cost_eur_per_kwh=dg_cost,
        res_da_kw=res, res_kw=res, res_cost_eur_per_kwh=res_cost,
        res_curtail_cost_eur_per_kwh=res_cost + 0.01, supplier_p_max_kw=9000.0,
        supplier_price_eur_per_kwh=supplier_price, load_da_kw=load, load_kw=load,
        dr_max_frac=np.full(N_LOAD, 0.08), dr_cost_eur_per_kwh=np.full(N_LOAD, 0.05),
        nsd_cost_eur_per_kwh=np.full(N_LOAD, 3.0), wm_price_eur_per_kwh=wm_price,
        wm_buy_max_kw=2500.0, wm_sell_max_kw=2500.0,
        lem_buy_price_eur_per_kwh=wm_price + 0.012 + lem_jitter,
        lem_sell_price_eur_per_kwh=wm_price - 0.008 + lem_jitter,
        lem_buy_max_kw=800.0, lem_sell_max_kw=800.0, ess=ess, cs=_charging_stations(rng, hour))


def day_ahead_plan(case: Case) -> DayAheadPlan:
    """Solve the whole day on the day-ahead forecasts; storage values from the LP duals."""
    result = schedule_day(case, forecast="day_ahead")
    model = build_model(case, day_horizon(case, "day_ahead"), ModelOptions())
    duals = equality_duals(model)
    plan = {}
    for k in FLEETS:
        fleet = getattr(case, k)
        rows = model.row_blocks[f"{k}_balance"]
        value = np.column_stack([-duals[rows], fleet.value_end_eur_per_kwh])
        plan[f"{k}_p_kw"] = result.p_kw[f"{k}_ch"] - result.p_kw[f"{k}_dis"]
        plan[f"{k}_e_kwh"] = result.e_kwh[k]
        plan[f"{k}_value_eur_per_kwh"] = value
    return DayAheadPlan(cost_eur=result.cost, **plan)


@lru_cache(maxsize=32)
def synthetic_case(seed: int = 0) -> Case:
    """The paper-size case (Sec. 3) with its day-ahead plan; deterministic from ``seed``."""
    case = synthetic_data(seed)
    return dataclasses.replace(case, day_ahead=day_ahead_plan(case))


def with_local_premium(case: Case, premium_eur_per_kwh: np.ndarray | float) -> Case:
    """``case`` with a local market that pays ``premium_eur_per_kwh`` above the wholesale price
    for local energy (per slot or one value; a community paying for local supply), its buy
    price kept at least ``premium + 0.004`` EUR/kWh above wholesale. Where the premium is > 0,
    buying wholesale to sell locally in the same slot would pay: the relaxation does it and only
    the one-direction rows across markets (``model._one_direction_across_markets``) stop it."""
    premium = np.broadcast_to(np.asarray(premium_eur_per_kwh, dtype=float),
                              case.wm_price_eur_per_kwh.shape)
    sell = case.wm_price_eur_per_kwh + premium
    buy = np.maximum(case.lem_buy_price_eur_per_kwh, sell + 0.004)
    return dataclasses.replace(case, lem_sell_price_eur_per_kwh=sell,
                               lem_buy_price_eur_per_kwh=buy)
