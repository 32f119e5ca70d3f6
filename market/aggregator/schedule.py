"""Schedule one hour (H-ERM: in hour h, schedule hour h+1 in four 15-minute slots) or a day.

``schedule_hour(case, hour)`` builds the model of Eq. 1 for the slots of ``hour`` (plus the
optional look-ahead hours), solves it with the project's solve path and returns every scheduled
power, the state-of-charge paths, the cost breakdown, solver statistics and the model matrices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from market.aggregator.case import Case
from market.aggregator.model import FLEETS, Horizon, Model, ModelOptions, build_model
from market.aggregator.solve import SolverOptions, solve_model

CAP_TOL_KW = 1e-6


@dataclass
class ScheduleResult:
    """One solved horizon. Powers in kW per (unit, slot), energies in kWh, money in EUR.

    ``cost`` is the optimal objective of the model (Eq. 1 + deviation-cap penalties - value of
    the energy stored at the end of the horizon); ``operating_cost_eur`` is Eq. 1 alone.
    ``e_kwh[fleet]`` has one column more than the slots (column 0 = energy at the start).
    ``milp`` holds ``c``, ``constraints``, ``bounds``, ``integrality`` for scipy.optimize.milp.
    """

    hour: int | None
    slots: np.ndarray
    n_exec_slots: int
    slot_h: float
    cost: float
    operating_cost_eur: float
    cost_breakdown_eur: dict[str, float]
    cap_penalty_eur: float
    storage_value_eur: float
    build_time_s: float
    solve_time_s: float
    stats: dict
    p_kw: dict[str, np.ndarray]
    e_kwh: dict[str, np.ndarray]
    binaries: dict[str, np.ndarray]
    cap_excess_kw: dict[str, np.ndarray]
    load_kw: np.ndarray
    res_kw: np.ndarray
    milp: dict = field(repr=False)

    @property
    def cap_binding(self) -> list[tuple[str, int, int]]:
        """(fleet, unit, day slot) where a deviation cap had to give way (soft cap exceeded)."""
        out = []
        for key, excess in self.cap_excess_kw.items():
            for u, t in np.argwhere(excess > CAP_TOL_KW):
                out.append((key, int(u), int(self.slots[t])))
        return out


def cost_terms_eur(case: Case, p: dict[str, np.ndarray], slots: np.ndarray) -> dict[str, float]:
    """The terms of Eq. 1 (EUR) for scheduled powers ``p`` (kW, (units, slots)) on ``slots``."""
    dt, s = case.slot_h, slots
    return {
        "dg": float(np.sum(case.dg_cost_eur_per_kwh[:, None] * p["dg"]) * dt),
        "res_energy": float(np.sum(case.res_cost_eur_per_kwh[:, None] * p["res"]) * dt),
        "curtailment": float(np.sum(case.res_curtail_cost_eur_per_kwh[:, None] * p["gcp"]) * dt),
        "supplier": float(np.sum(case.supplier_price_eur_per_kwh[s] * p["supplier"]) * dt),
        "dr": float(np.sum(case.dr_cost_eur_per_kwh[:, None] * p["dr"]) * dt),
        "nsd": float(np.sum(case.nsd_cost_eur_per_kwh[:, None] * p["nsd"]) * dt),
        "ess_discharge": float(np.sum(
            case.ess.discharge_cost_eur_per_kwh[:, None] * p["ess_dis"]) * dt),
        "cs_discharge": float(np.sum(
            case.cs.discharge_cost_eur_per_kwh[:, None] * p["cs_dis"]) * dt),
        "wholesale": float(np.sum(case.wm_price_eur_per_kwh[s] * (p["wm_buy"] - p["wm_sell"]))
                           * dt),
        "local_market": float(np.sum(case.lem_buy_price_eur_per_kwh[s] * p["lem_buy"]
                                     - case.lem_sell_price_eur_per_kwh[s] * p["lem_sell"]) * dt),
    }


def _extract(case: Case, model: Model, hz: Horizon, x: np.ndarray) -> dict:
    """Powers, energies, binaries and cost terms from the solution vector."""
    blk = model.blocks
    p = {name: x[blk[name]] for name in ("dg", "gcp", "supplier", "dr", "nsd", "ess_ch",
                                          "ess_dis", "cs_ch", "cs_dis", "wm_buy", "wm_sell",
                                          "lem_buy", "lem_sell")}
    p["res"] = hz.res_kw - p["gcp"]
    e = {k: np.column_stack([hz.e_init_kwh[k], x[blk[f"{k}_e"]]]) for k in FLEETS}
    for k in FLEETS:
        if f"{k}_e_hi" in blk:
            e[k][:, -1] += x[blk[f"{k}_e_hi"]]
    binaries = {name: np.round(x[blk[name]]).astype(int)
                for name in ("ess_x_ch", "ess_x_dis", "cs_x_ch", "cs_x_dis", "wm_y", "lem_y")}
    cap_excess = {k: (x[blk[f"{k}_cap_up"]] + x[blk[f"{k}_cap_dn"]]) if f"{k}_cap_up" in blk
                  else np.zeros_like(p[f"{k}_ch"]) for k in FLEETS}
    breakdown = cost_terms_eur(case, p, hz.slots)
    penalty = 0.0
    for k in FLEETS:
        if f"{k}_cap_up" in blk:
            penalty += float(np.sum(model.c[blk[f"{k}_cap_up"]] * x[blk[f"{k}_cap_up"]])
                             + np.sum(model.c[blk[f"{k}_cap_dn"]] * x[blk[f"{k}_cap_dn"]]))
    value = 0.0
    for k in FLEETS:
        for name in (f"{k}_e", f"{k}_e_hi"):
            if name in blk:
                idx = blk[name][:, -1] if blk[name].ndim == 2 else blk[name]
                value -= float(model.c[idx] @ x[idx])
    return {"p_kw": p, "e_kwh": e, "binaries": binaries, "cap_excess_kw": cap_excess,
            "cost_breakdown_eur": breakdown, "cap_penalty_eur": penalty,
            "storage_value_eur": value}


def solve_horizon(case: Case, hz: Horizon, opts: ModelOptions, solver: SolverOptions,
                  hour: int | None, n_exec_slots: int) -> ScheduleResult:
    """Build and solve the model of ``hz``; see :class:`ScheduleResult`."""
    t0 = time.perf_counter()
    model = build_model(case, hz, opts)
    build_time = time.perf_counter() - t0
    x, fun, stats = solve_model(model, solver)
    parts = _extract(case, model, hz, x)
    info = stats.as_dict()
    info.update(n_vars=model.n_vars, n_binaries=model.n_binaries,
                n_constraints=model.n_constraints)
    return ScheduleResult(
        hour=hour, slots=hz.slots, n_exec_slots=n_exec_slots, slot_h=case.slot_h, cost=fun,
        operating_cost_eur=float(sum(parts["cost_breakdown_eur"].values())),
        build_time_s=build_time, solve_time_s=stats.total_time_s, stats=info,
        load_kw=hz.load_kw, res_kw=hz.res_kw, milp=model.milp_kwargs(), **parts)


def hour_horizon(case: Case, hour: int, opts: ModelOptions,
                 e_init_kwh: dict[str, np.ndarray] | None = None) -> Horizon:
    """Horizon of ``hour`` (+ look-ahead): intraday forecast for the hour, day-ahead after it."""
    if not (0 <= hour < case.n_hours):
        raise ValueError(f"hour {hour} outside 0..{case.n_hours - 1}")
    sph = case.slots_per_hour
    first = hour * sph
    last = min((hour + 1 + opts.lookahead_h) * sph, case.n_slots)
    slots = np.arange(first, last)
    fresh = slots < first + sph
    load = np.where(fresh, case.load_kw[:, slots], case.load_da_kw[:, slots])
    res = np.where(fresh, case.res_kw[:, slots], case.res_da_kw[:, slots])
    plan = case.day_ahead
    if e_init_kwh is None:
        if plan is None and hour > 0:
            raise ValueError("no initial state of charge given and the case has no day-ahead plan")
        e_init_kwh = {k: (getattr(plan, f"{k}_e_kwh")[:, first] if plan is not None
                          else getattr(case, k).e_init_kwh) for k in FLEETS}
    e_init = {}
    for k in FLEETS:
        fleet = getattr(case, k)
        e0 = np.asarray(e_init_kwh[k], dtype=float)
        if e0.shape != (fleet.n_units,):
            raise ValueError(f"initial {k} energy has shape {e0.shape}, expected "
                             f"({fleet.n_units},)")
        req = getattr(case, f"{k}_e_req_kwh")[:, first]
        cap = getattr(case, f"{k}_e_cap_kwh")[:, first]
        bad = np.flatnonzero((e0 < req - 1e-6) | (e0 > cap + 1e-6))
        if bad.size:
            u = int(bad[0])
            raise ValueError(f"{k} unit {u}: initial energy {e0[u]:.6g} kWh lies outside "
                             f"{req[u]:.6g}..{cap[u]:.6g} kWh, the window its later energy "
                             f"limits allow")
        e_init[k] = e0
    value = {}
    for k in FLEETS:
        fleet = getattr(case, k)
        if opts.storage_value == "none":
            value[k] = np.zeros(fleet.n_units)
        elif last == case.n_slots:
            value[k] = np.array(fleet.value_end_eur_per_kwh)
        elif plan is None:
            raise ValueError("storage_value='dual' needs the case's day-ahead plan")
        else:
            value[k] = np.array(getattr(plan, f"{k}_value_eur_per_kwh")[:, last])
    da = {k: (getattr(plan, f"{k}_p_kw")[:, slots] if plan is not None else None)
          for k in FLEETS}
    anchor = None
    if opts.storage_value == "dual" and last < case.n_slots and plan is not None:
        anchor = {k: np.array(getattr(plan, f"{k}_e_kwh")[:, last]) for k in FLEETS}
    return Horizon(slots=slots, load_kw=load, res_kw=res, e_init_kwh=e_init,
                   value_end_eur_per_kwh=value, da_p_kw=da, e_anchor_kwh=anchor)


def schedule_hour(case: Case, hour: int, options: ModelOptions | None = None,
                  solver: SolverOptions | None = None,
                  e_init_kwh: dict[str, np.ndarray] | None = None) -> ScheduleResult:
    """Schedule the four slots of ``hour`` (0-based hour of the day) at minimum cost (Eq. 1).

    ``e_init_kwh``: stored energy per fleet ("ess", "cs") at the start of the hour; defaults to
    the day-ahead plan's. The result's ``cost`` is the model's optimal objective.
    """
    options = options or ModelOptions()
    hz = hour_horizon(case, hour, options, e_init_kwh)
    return solve_horizon(case, hz, options, solver or SolverOptions(), hour,
                         case.slots_per_hour)


def day_horizon(case: Case, forecast: str = "intraday") -> Horizon:
    """All slots of the day with ``forecast`` "intraday" (perfect information) or "day_ahead"."""
    if forecast not in ("intraday", "day_ahead"):
        raise ValueError(f"forecast must be 'intraday' or 'day_ahead', got {forecast!r}")
    da = forecast == "day_ahead"
    plan = case.day_ahead
    return Horizon(
        slots=np.arange(case.n_slots),
        load_kw=np.array(case.load_da_kw if da else case.load_kw),
        res_kw=np.array(case.res_da_kw if da else case.res_kw),
        e_init_kwh={k: np.array(getattr(case, k).e_init_kwh) for k in FLEETS},
        value_end_eur_per_kwh={k: np.array(getattr(case, k).value_end_eur_per_kwh)
                               for k in FLEETS},
        da_p_kw={k: (getattr(plan, f"{k}_p_kw") if plan is not None else None)
                 for k in FLEETS})


def schedule_day(case: Case, forecast: str = "intraday", options: ModelOptions | None = None,
                 solver: SolverOptions | None = None) -> ScheduleResult:
    """The whole day in one model (perfect information when ``forecast='intraday'``)."""
    options = options or ModelOptions()
    return solve_horizon(case, day_horizon(case, forecast), options,
                         solver or SolverOptions(time_limit_s=120.0), None, case.n_slots)
