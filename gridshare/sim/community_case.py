"""The community as an H-ERM aggregator case (``market.aggregator.Case``), one day in 15-min slots.

Resources (kW, kWh, EUR/kWh): the customers' loads (day profiles, slot means; no direct load
control), their PV as non-dispatchable DG (no energy cost, curtailment costs the feed-in tariff),
no dispatchable DG, the grid as the external supplier at the retail tariff and as the wholesale
buyer at the feed-in tariff (nothing bought at that price), no outside local market (the
community is the local market), the community battery as the one ESS (capacity and SoC limits of
the market's battery, +-rated power) and the charging stations as the CS fleet built from the EV
sessions (connected capacity, energy needs at departure, arrival and departure flows). The
day-ahead plan is ``market.aggregator.synthetic.day_ahead_plan`` of this case.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gridshare.sim.agents import VEHICLE_BATTERY_KWH, EvSession
from market.aggregator import Case, StorageFleet
from market.aggregator.case import SLOT_H
from market.aggregator.synthetic import day_ahead_plan

SLOT_MIN = 15
NSD_COST_EUR_PER_KWH = 3.0


def slot_means(minute_kw: np.ndarray) -> np.ndarray:
    """(1440, n) minute values -> (n, 96) slot means."""
    n_slots = minute_kw.shape[0] // SLOT_MIN
    return minute_kw[: n_slots * SLOT_MIN].reshape(n_slots, SLOT_MIN, -1).mean(axis=1).T


def cs_fleet(stations: Sequence[tuple[str, float]], sessions: Sequence[EvSession],
             n_slots: int) -> StorageFleet:
    """Charging stations as a storage fleet (energy of the connected vehicles)."""
    n = len(stations)
    cap = np.zeros((n, n_slots))
    need = np.zeros((n, n_slots))
    flow = np.zeros((n, n_slots))
    p_ch = np.zeros((n, n_slots))
    e0 = np.zeros(n)
    slot = np.arange(n_slots)
    for j, (name, rated_kw) in enumerate(stations):
        for s in (s for s in sessions if s.station == name):
            a, d = s.arrive_min // SLOT_MIN, -(-s.depart_min // SLOT_MIN)
            d = min(d, n_slots)
            connected = (slot >= a) & (slot < d)
            cap[j] += connected * VEHICLE_BATTERY_KWH
            p_ch[j] += connected * s.p_max_kw
            need[j, d - 1] += s.arrival_kwh + s.energy_kwh
            if a == 0:
                e0[j] += s.arrival_kwh
            else:
                flow[j, a] += s.arrival_kwh
            if d < n_slots:
                flow[j, d] -= s.arrival_kwh + s.energy_kwh
                # energy charged beyond the need (a band can force a station to charge) leaves
                # with the vehicle; the fleet keeps room for it after the departure
                cap[j, d:] += VEHICLE_BATTERY_KWH - s.arrival_kwh - s.energy_kwh
        p_ch[j] = np.minimum(p_ch[j], rated_kw)
    # a vehicle's required energy holds only at its departure slot; keep e_min <= e_max
    need = np.minimum(need, cap)
    return StorageFleet(
        name="cs", e_min_kwh=need, e_max_kwh=cap, flow_kwh=flow, p_charge_max_kw=p_ch,
        p_discharge_max_kw=np.zeros((n, n_slots)), eff_charge=np.ones(n),
        eff_discharge=np.ones(n), discharge_cost_eur_per_kwh=np.full(n, 0.18),
        e_init_kwh=e0, value_end_eur_per_kwh=np.zeros(n))


def community_case(load_kw: np.ndarray, pv_kw: np.ndarray, *, battery_capacity_kwh: float,
                   battery_soc_min_kwh: float, battery_soc_max_kwh: float,
                   battery_initial_kwh: float, battery_p_kw: float, battery_eff: float,
                   stations: Sequence[tuple[str, float]], sessions: Sequence[EvSession],
                   retail_eur_per_kwh: float, feed_in_eur_per_kwh: float) -> Case:
    """The day's aggregator case with its day-ahead plan (see module docstring).

    ``load_kw``/``pv_kw``: (1440, n_customers) minute profiles.
    """
    load = slot_means(load_kw)
    res = slot_means(pv_kw)
    n_load, n_slots = load.shape
    n_res = res.shape[0]
    ones = np.ones(n_slots)
    ess = StorageFleet(
        name="ess", e_min_kwh=np.full((1, n_slots), battery_soc_min_kwh),
        e_max_kwh=np.full((1, n_slots), battery_soc_max_kwh), flow_kwh=np.zeros((1, n_slots)),
        p_charge_max_kw=np.full((1, n_slots), battery_p_kw),
        p_discharge_max_kw=np.full((1, n_slots), battery_p_kw),
        eff_charge=np.array([battery_eff]), eff_discharge=np.array([battery_eff]),
        discharge_cost_eur_per_kwh=np.array([0.01]), e_init_kwh=np.array([battery_initial_kwh]),
        value_end_eur_per_kwh=np.array([feed_in_eur_per_kwh]))
    if battery_capacity_kwh < battery_soc_max_kwh:
        raise ValueError("battery capacity below its maximum state of charge")
    case = Case(
        slot_h=SLOT_H, dg_p_min_kw=np.zeros(0), dg_p_max_kw=np.zeros(0),
        dg_cost_eur_per_kwh=np.zeros(0), res_da_kw=res, res_kw=res,
        res_cost_eur_per_kwh=np.zeros(n_res),
        res_curtail_cost_eur_per_kwh=np.full(n_res, feed_in_eur_per_kwh),
        supplier_p_max_kw=1e4, supplier_price_eur_per_kwh=retail_eur_per_kwh * ones,
        load_da_kw=load, load_kw=load, dr_max_frac=np.zeros(n_load),
        dr_cost_eur_per_kwh=np.full(n_load, 0.05),
        nsd_cost_eur_per_kwh=np.full(n_load, NSD_COST_EUR_PER_KWH),
        wm_price_eur_per_kwh=feed_in_eur_per_kwh * ones, wm_buy_max_kw=0.0, wm_sell_max_kw=1e4,
        lem_buy_price_eur_per_kwh=retail_eur_per_kwh * ones,
        lem_sell_price_eur_per_kwh=feed_in_eur_per_kwh * ones, lem_buy_max_kw=0.0,
        lem_sell_max_kw=0.0, ess=ess, cs=cs_fleet(stations, sessions, n_slots))
    return dataclasses.replace(case, day_ahead=day_ahead_plan(case))
