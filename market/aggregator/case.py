"""Resource data of the hour-ahead aggregator (H-ERM, Canizes et al. 2022, Sec. 2.2 and 3).

A :class:`Case` holds one day of 15-minute slots: the day-ahead forecasts, the intraday
(hour-ahead) forecasts, every resource's limits and prices, the day-ahead plan and, when the DSO
has published them, the operating bands of the storage units and charging stations. Units: power
kW, energy kWh, prices EUR per kWh (the paper's m.u./kWh), slot length hours. Sign convention of
the DSO bands (docs/interfaces.md): consumption positive, so a storage band bounds
``p_charge_kw - p_discharge_kw``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

SLOTS_PER_HOUR = 4
SLOT_H = 0.25


def _freeze(array: np.ndarray) -> np.ndarray:
    array = np.array(array, dtype=float)
    array.setflags(write=False)
    return array


def _check_shape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape} (units, slots)")


def _check_nonneg(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has non-finite entries")
    if np.any(array < 0):
        raise ValueError(f"{name} must be non-negative (min {float(np.min(array)):.6g})")


@dataclass(frozen=True)
class StorageFleet:
    """Energy storage units or EV charging stations (paper: ESS and CS constraints).

    Per unit (first axis) and slot (second axis):
    ``e_min_kwh``/``e_max_kwh`` stored-energy limits at the end of each slot (for a charging
    station: the energy the connected vehicles need / their connected capacity),
    ``flow_kwh`` energy added at the start of a slot from outside (arriving vehicles' energy minus
    departing vehicles' energy; zero for ESS), ``p_charge_max_kw``/``p_discharge_max_kw`` converter
    limits, efficiencies, ``discharge_cost_eur_per_kwh`` (0.01 ESS, 0.18 CS in the paper),
    ``e_init_kwh`` the energy at the start of the day and ``value_end_eur_per_kwh`` the value of
    the energy still stored at the end of the day.
    """

    name: str
    e_min_kwh: np.ndarray
    e_max_kwh: np.ndarray
    flow_kwh: np.ndarray
    p_charge_max_kw: np.ndarray
    p_discharge_max_kw: np.ndarray
    eff_charge: np.ndarray
    eff_discharge: np.ndarray
    discharge_cost_eur_per_kwh: np.ndarray
    e_init_kwh: np.ndarray
    value_end_eur_per_kwh: np.ndarray

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name != "name":
                object.__setattr__(self, f.name, _freeze(getattr(self, f.name)))
        n, n_slots = self.e_min_kwh.shape if self.e_min_kwh.ndim == 2 else (-1, -1)
        if n < 0:
            raise ValueError(f"{self.name}.e_min_kwh must be 2-D (units, slots)")
        for key in ("e_max_kwh", "flow_kwh", "p_charge_max_kw", "p_discharge_max_kw"):
            _check_shape(f"{self.name}.{key}", getattr(self, key), (n, n_slots))
        for key in ("eff_charge", "eff_discharge", "discharge_cost_eur_per_kwh", "e_init_kwh",
                    "value_end_eur_per_kwh"):
            _check_shape(f"{self.name}.{key}", getattr(self, key), (n,))
        for key in ("e_min_kwh", "e_max_kwh", "p_charge_max_kw", "p_discharge_max_kw",
                    "e_init_kwh", "discharge_cost_eur_per_kwh", "value_end_eur_per_kwh"):
            _check_nonneg(f"{self.name}.{key}", getattr(self, key))
        if np.any((self.eff_charge <= 0) | (self.eff_charge > 1)
                  | (self.eff_discharge <= 0) | (self.eff_discharge > 1)):
            raise ValueError(f"{self.name}: efficiencies must lie in (0, 1]")
        bad = np.argwhere(self.e_min_kwh > self.e_max_kwh + 1e-9)
        if bad.size:
            u, t = bad[0]
            raise ValueError(f"{self.name} unit {u} slot {t}: e_min_kwh {self.e_min_kwh[u, t]:.6g} "
                             f"exceeds e_max_kwh {self.e_max_kwh[u, t]:.6g}")

    @property
    def n_units(self) -> int:
        return int(self.e_min_kwh.shape[0])

    @property
    def n_slots(self) -> int:
        return int(self.e_min_kwh.shape[1])


def charge_bounds_kw(
    fleet: StorageFleet, band_p_min_kw: np.ndarray | None, band_p_max_kw: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bounds (lb, ub) of charge and discharge power per unit and slot, with the DSO band.

    The band ``p_min <= p_ch - p_dis <= p_max`` is exact as variable bounds because charge and
    discharge never coincide: ``p_ch in [max(p_min, 0), min(P_ch, max(p_max, 0))]`` and
    ``p_dis in [max(-p_max, 0), min(P_dis, max(-p_min, 0))]``. Returns ``(ch_lb, ch_ub, dis_lb,
    dis_ub)``, each (units, slots) in kW.
    """
    ch_ub = np.array(fleet.p_charge_max_kw)
    dis_ub = np.array(fleet.p_discharge_max_kw)
    ch_lb = np.zeros_like(ch_ub)
    dis_lb = np.zeros_like(dis_ub)
    if band_p_min_kw is None or band_p_max_kw is None:
        return ch_lb, ch_ub, dis_lb, dis_ub
    ch_lb = np.maximum(band_p_min_kw, 0.0)
    ch_ub = np.minimum(ch_ub, np.maximum(band_p_max_kw, 0.0))
    dis_lb = np.maximum(-band_p_max_kw, 0.0)
    dis_ub = np.minimum(dis_ub, np.maximum(-band_p_min_kw, 0.0))
    return ch_lb, ch_ub, dis_lb, dis_ub


def effective_energy_limits_kwh(fleet: StorageFleet, ch_ub_kw: np.ndarray, dis_ub_kw: np.ndarray,
                                slot_h: float = SLOT_H) -> tuple[np.ndarray, np.ndarray]:
    """Stored-energy window at each slot boundary from which every later limit stays reachable.

    Backward recursions (vectorised over units):
    ``R_t = max(e_min_t, R_{t+1} - flow_{t+1} - eff_ch * P_ch,{t+1} * dt)`` (lowest energy) and
    ``U_t = min(e_max_t, U_{t+1} - flow_{t+1} + P_dis,{t+1} * dt / eff_dis)`` (highest energy).
    Shapes (units, slots + 1); column 0 is the start of the day. Raises ValueError when a
    target cannot be reached by any charging power, the window is empty, or the initial energy
    lies outside it.
    """
    n, n_slots = fleet.n_units, fleet.n_slots
    req = np.zeros((n, n_slots + 1))
    cap = np.zeros((n, n_slots + 1))
    req[:, n_slots] = fleet.e_min_kwh[:, n_slots - 1]
    cap[:, n_slots] = fleet.e_max_kwh[:, n_slots - 1]
    gain = fleet.eff_charge[:, None] * ch_ub_kw * slot_h
    loss = dis_ub_kw * slot_h / fleet.eff_discharge[:, None]
    for t in range(n_slots - 1, -1, -1):  # backward in time, vectorised over units
        own_lo = fleet.e_min_kwh[:, t - 1] if t > 0 else np.zeros(n)
        own_hi = fleet.e_max_kwh[:, t - 1] if t > 0 else np.full(n, np.inf)
        req[:, t] = np.maximum(own_lo, req[:, t + 1] - fleet.flow_kwh[:, t] - gain[:, t])
        cap[:, t] = np.minimum(own_hi, cap[:, t + 1] - fleet.flow_kwh[:, t] + loss[:, t])
    bad = np.argwhere(req > cap + 1e-6)
    if bad.size:
        u, k = bad[0]
        raise ValueError(
            f"{fleet.name} unit {u}: energy target at slot boundary {k} cannot be reached by any "
            f"charging power within the capacity (needs {req[u, k]:.6g} kWh, at most "
            f"{cap[u, k]:.6g} kWh can be held)")
    e0 = fleet.e_init_kwh
    short = np.flatnonzero((e0 < req[:, 0] - 1e-6) | (e0 > cap[:, 0] + 1e-6))
    if short.size:
        u = short[0]
        raise ValueError(
            f"{fleet.name} unit {u}: energy targets cannot be reached by any charging power from "
            f"the initial {e0[u]:.6g} kWh (feasible start window {req[u, 0]:.6g}.."
            f"{cap[u, 0]:.6g} kWh)")
    return req, cap


@dataclass(frozen=True)
class DayAheadPlan:
    """The day-ahead schedule the hour-ahead model starts from (paper Sec. 2.1, ref. [12]).

    ``ess_p_kw``/``cs_p_kw``: net power (charge minus discharge) per unit and slot;
    ``ess_e_kwh``/``cs_e_kwh``: stored energy, (units, slots + 1), column 0 the start of the day;
    ``ess_value_eur_per_kwh``/``cs_value_eur_per_kwh``: marginal value of stored energy at each
    slot boundary (the dual of the storage balance), same shape; ``cost_eur``: the day-ahead
    objective (Eq. 1 over the day minus the end-of-day storage value).
    """

    ess_p_kw: np.ndarray
    cs_p_kw: np.ndarray
    ess_e_kwh: np.ndarray
    cs_e_kwh: np.ndarray
    ess_value_eur_per_kwh: np.ndarray
    cs_value_eur_per_kwh: np.ndarray
    cost_eur: float

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name != "cost_eur":
                object.__setattr__(self, f.name, _freeze(getattr(self, f.name)))


@dataclass(frozen=True)
class Case:
    """One day of aggregator data (paper Sec. 3). Arrays are (units, slots) unless noted.

    Forecasts: ``load_da_kw``/``res_da_kw`` day-ahead, ``load_kw``/``res_kw`` intraday (the
    hour-ahead model's fresh forecast; equal to the day-ahead ones unless disturbed).
    Prices per slot (EUR/kWh): supplier, wholesale market (constant within an hour), local market
    buy and sell. ``band`` arrays (optional): DSO operating bands of ESS/CS, net power in kW.
    """

    slot_h: float
    dg_p_min_kw: np.ndarray          # (n_dg,) dispatchable DG limits
    dg_p_max_kw: np.ndarray
    dg_cost_eur_per_kwh: np.ndarray
    res_da_kw: np.ndarray            # (n_res, slots) non-dispatchable DG day-ahead forecast
    res_kw: np.ndarray
    res_cost_eur_per_kwh: np.ndarray   # (n_res,) energy cost of the non-dispatchable DG
    res_curtail_cost_eur_per_kwh: np.ndarray
    supplier_p_max_kw: float
    supplier_price_eur_per_kwh: np.ndarray   # (slots,)
    load_da_kw: np.ndarray           # (n_load, slots)
    load_kw: np.ndarray
    dr_max_frac: np.ndarray          # (n_load,) direct load control share of the load
    dr_cost_eur_per_kwh: np.ndarray
    nsd_cost_eur_per_kwh: np.ndarray
    wm_price_eur_per_kwh: np.ndarray   # (slots,) constant within each hour
    wm_buy_max_kw: float
    wm_sell_max_kw: float
    lem_buy_price_eur_per_kwh: np.ndarray
    lem_sell_price_eur_per_kwh: np.ndarray
    lem_buy_max_kw: float
    lem_sell_max_kw: float
    ess: StorageFleet
    cs: StorageFleet
    day_ahead: DayAheadPlan | None = None
    ess_band_p_min_kw: np.ndarray | None = None
    ess_band_p_max_kw: np.ndarray | None = None
    cs_band_p_min_kw: np.ndarray | None = None
    cs_band_p_max_kw: np.ndarray | None = None
    ess_e_req_kwh: np.ndarray = field(init=False, repr=False)
    cs_e_req_kwh: np.ndarray = field(init=False, repr=False)
    ess_e_cap_kwh: np.ndarray = field(init=False, repr=False)
    cs_e_cap_kwh: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        skip = {"slot_h", "supplier_p_max_kw", "wm_buy_max_kw", "wm_sell_max_kw",
                "lem_buy_max_kw", "lem_sell_max_kw", "ess", "cs", "day_ahead",
                "ess_e_req_kwh", "cs_e_req_kwh", "ess_e_cap_kwh", "cs_e_cap_kwh"}
        for f in dataclasses.fields(self):
            if f.name in skip:
                continue
            value = getattr(self, f.name)
            if value is not None:
                object.__setattr__(self, f.name, _freeze(value))
        self._validate()
        for fleet, band_min, band_max, key in (
            (self.ess, self.ess_band_p_min_kw, self.ess_band_p_max_kw, "ess"),
            (self.cs, self.cs_band_p_min_kw, self.cs_band_p_max_kw, "cs"),
        ):
            _, ch_ub, _, dis_ub = charge_bounds_kw(fleet, band_min, band_max)
            req, cap = effective_energy_limits_kwh(fleet, ch_ub, dis_ub, self.slot_h)
            object.__setattr__(self, f"{key}_e_req_kwh", _freeze(req))
            object.__setattr__(self, f"{key}_e_cap_kwh", _freeze(cap))

    @property
    def n_slots(self) -> int:
        return int(self.supplier_price_eur_per_kwh.shape[0])

    @property
    def slots_per_hour(self) -> int:
        return round(1.0 / self.slot_h)

    @property
    def n_hours(self) -> int:
        return self.n_slots // self.slots_per_hour

    def _validate(self) -> None:
        if not (self.slot_h > 0 and abs(1.0 / self.slot_h - round(1.0 / self.slot_h)) < 1e-9):
            raise ValueError(f"slot_h {self.slot_h} h must divide one hour")
        n_slots = self.n_slots
        if n_slots == 0 or n_slots % self.slots_per_hour:
            raise ValueError(f"{n_slots} slots is not a whole number of hours of "
                             f"{self.slots_per_hour} slots")
        n_dg, n_res, n_load = len(self.dg_p_max_kw), len(self.res_cost_eur_per_kwh), len(
            self.dr_max_frac)
        shapes = {
            "dg_p_min_kw": (n_dg,), "dg_cost_eur_per_kwh": (n_dg,),
            "res_da_kw": (n_res, n_slots), "res_kw": (n_res, n_slots),
            "res_curtail_cost_eur_per_kwh": (n_res,),
            "supplier_price_eur_per_kwh": (n_slots,),
            "load_da_kw": (n_load, n_slots), "load_kw": (n_load, n_slots),
            "dr_cost_eur_per_kwh": (n_load,), "nsd_cost_eur_per_kwh": (n_load,),
            "wm_price_eur_per_kwh": (n_slots,), "lem_buy_price_eur_per_kwh": (n_slots,),
            "lem_sell_price_eur_per_kwh": (n_slots,),
        }
        for name, shape in shapes.items():
            _check_shape(name, getattr(self, name), shape)
        for name in ("dg_p_min_kw", "dg_p_max_kw", "res_da_kw", "res_kw", "load_da_kw",
                     "load_kw", "dr_max_frac", "nsd_cost_eur_per_kwh"):
            _check_nonneg(name, getattr(self, name))
        for name in ("dg_cost_eur_per_kwh", "res_cost_eur_per_kwh",
                     "res_curtail_cost_eur_per_kwh", "supplier_price_eur_per_kwh",
                     "dr_cost_eur_per_kwh", "wm_price_eur_per_kwh", "lem_buy_price_eur_per_kwh",
                     "lem_sell_price_eur_per_kwh"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{name} has non-finite entries")
        for name in ("supplier_p_max_kw", "wm_buy_max_kw", "wm_sell_max_kw", "lem_buy_max_kw",
                     "lem_sell_max_kw"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative capacity, got {value}")
        if np.any(self.dg_p_min_kw > self.dg_p_max_kw):
            raise ValueError("dg_p_min_kw exceeds dg_p_max_kw for some dispatchable DG")
        if np.any(self.dr_max_frac > 1):
            raise ValueError("dr_max_frac must lie in [0, 1]")
        hourly = self.wm_price_eur_per_kwh.reshape(-1, self.slots_per_hour)
        if np.any(np.ptp(hourly, axis=1) > 1e-12):
            raise ValueError("wm_price_eur_per_kwh must be the same in the slots of an hour "
                             "(day-ahead wholesale prices are hourly)")
        for fleet in (self.ess, self.cs):
            if fleet.n_slots != n_slots:
                raise ValueError(f"{fleet.name} has {fleet.n_slots} slots, the case has {n_slots}")
        for fleet, lo, hi, name in (
            (self.ess, self.ess_band_p_min_kw, self.ess_band_p_max_kw, "ess"),
            (self.cs, self.cs_band_p_min_kw, self.cs_band_p_max_kw, "cs"),
        ):
            if (lo is None) != (hi is None):
                raise ValueError(f"{name} band needs both p_min_kw and p_max_kw")
            if lo is None:
                continue
            _check_shape(f"{name}_band_p_min_kw", lo, (fleet.n_units, n_slots))
            _check_shape(f"{name}_band_p_max_kw", hi, (fleet.n_units, n_slots))
            if np.any(lo > hi + 1e-9):
                raise ValueError(f"{name} band: p_min_kw exceeds p_max_kw")
            if np.any(lo > fleet.p_charge_max_kw + 1e-9) or np.any(
                    -hi > fleet.p_discharge_max_kw + 1e-9):
                raise ValueError(f"{name} band lies outside the converter limits")
        if self.day_ahead is not None:
            _check_shape("day_ahead.ess_p_kw", self.day_ahead.ess_p_kw, (self.ess.n_units, n_slots))
            _check_shape("day_ahead.cs_p_kw", self.day_ahead.cs_p_kw, (self.cs.n_units, n_slots))

    def with_disturbance(self, demand_pct: float | np.ndarray = 0.0,
                         res_pct: float | np.ndarray = 0.0) -> Case:
        """Intraday forecasts = day-ahead forecasts scaled by ``1 + pct/100`` (Table 1).

        ``demand_pct``/``res_pct``: a number, or one value per hour (case 5, Fig. 2a).
        """
        def factor(pct: float | np.ndarray) -> np.ndarray:
            pct_arr = np.asarray(pct, dtype=float)
            if pct_arr.ndim == 0:
                pct_arr = np.full(self.n_hours, float(pct_arr))
            if pct_arr.shape != (self.n_hours,):
                raise ValueError(f"disturbance needs one value or {self.n_hours} hourly values, "
                                 f"got shape {pct_arr.shape}")
            if np.any(pct_arr <= -100):
                raise ValueError("a disturbance of -100% or less makes forecasts negative")
            return np.repeat(1.0 + pct_arr / 100.0, self.slots_per_hour)

        return dataclasses.replace(self, load_kw=self.load_da_kw * factor(demand_pct),
                                   res_kw=self.res_da_kw * factor(res_pct))

    def with_bands(self, ess_p_min_kw: np.ndarray | None = None,
                   ess_p_max_kw: np.ndarray | None = None,
                   cs_p_min_kw: np.ndarray | None = None,
                   cs_p_max_kw: np.ndarray | None = None) -> Case:
        """The same case with the DSO operating bands (net kW, consumption positive) set."""
        return dataclasses.replace(self, ess_band_p_min_kw=ess_p_min_kw,
                                   ess_band_p_max_kw=ess_p_max_kw,
                                   cs_band_p_min_kw=cs_p_min_kw, cs_band_p_max_kw=cs_p_max_kw)
