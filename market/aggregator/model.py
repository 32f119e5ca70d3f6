"""The H-ERM mixed-integer linear program (Canizes et al. 2022, Eq. 1 and Sec. 2.2).

Variables are laid out in blocks of shape (units, slots), unit-major. The constraint matrix is
assembled once as a scipy.sparse CSR matrix from vectorised index arrays (no loop over
resources, only over the handful of resource types). Rows per slot: one power balance, four per
storage unit or charging station (energy balance, charge <= P x_ch, discharge <= P x_dis,
x_ch + x_dis <= 1), two per market (buy <= C y, sell <= C (1 - y)), two across the markets (no
selling on one while buying on the other), and with the deviation caps one ranged row per storage
unit or charging station.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint

from market.aggregator.case import Case, StorageFleet, charge_bounds_kw

FLEETS = ("ess", "cs")
MARKETS = ("wm", "lem")


@dataclass(frozen=True)
class ModelOptions:
    """Model switches (paper Table 1 and the issue's additions).

    ``ess_cap_frac``/``cs_cap_frac``: cap on the deviation of net power from the day-ahead plan as
    a share of the day-ahead value (0.10 and 0.05 in cases 1 and 3; None = not constrained), made
    soft with ``cap_penalty_eur_per_kwh`` on the excess. ``storage_value``: "dual" values the
    energy left at the end of the horizon at the day-ahead dual, "none" is myopic.
    ``lookahead_h``: extra hours in the model (day-ahead forecasts); only the first is executed.
    ``value_spread_eur_per_kwh``: the end-of-horizon value is ``v + spread`` per kWh up to the
    day-ahead plan's stored energy and ``v - spread`` above it (a concave two-piece value that
    settles the ties a single linear value leaves between charging now and later).
    """

    ess_cap_frac: float | None = None
    cs_cap_frac: float | None = None
    cap_penalty_eur_per_kwh: float = 0.5
    storage_value: str = "dual"
    lookahead_h: int = 0
    value_spread_eur_per_kwh: float = 0.01

    def __post_init__(self) -> None:
        for name in ("ess_cap_frac", "cs_cap_frac"):
            value = getattr(self, name)
            if value is not None and not (0 <= value < np.inf):
                raise ValueError(f"{name} must be a non-negative fraction, got {value}")
        if self.cap_penalty_eur_per_kwh < 0:
            raise ValueError("cap_penalty_eur_per_kwh must be non-negative")
        if self.storage_value not in ("dual", "none"):
            raise ValueError(f"storage_value must be 'dual' or 'none', got {self.storage_value!r}")
        if self.lookahead_h < 0:
            raise ValueError("lookahead_h must be non-negative")
        if self.value_spread_eur_per_kwh < 0:
            raise ValueError("value_spread_eur_per_kwh must be non-negative")


@dataclass(frozen=True)
class Horizon:
    """What one model covers: day slots, the forecasts used and the initial/terminal storage.

    ``load_kw``/``res_kw`` (units, T); ``e_init_kwh`` and ``value_end_eur_per_kwh`` per fleet.
    """

    slots: np.ndarray
    load_kw: np.ndarray
    res_kw: np.ndarray
    e_init_kwh: dict[str, np.ndarray]
    value_end_eur_per_kwh: dict[str, np.ndarray]
    da_p_kw: dict[str, np.ndarray | None]
    e_anchor_kwh: dict[str, np.ndarray] | None = None


@dataclass
class Model:
    """The assembled MILP ``min c x  s.t.  row_lb <= A x <= row_ub, lb <= x <= ub``."""

    c: np.ndarray
    a_matrix: sp.csr_matrix
    row_lb: np.ndarray
    row_ub: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    integrality: np.ndarray
    blocks: dict[str, np.ndarray]
    row_blocks: dict[str, np.ndarray]
    n_slots: int
    exclusive: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = field(
        default_factory=list)
    objective_constant_eur: float = 0.0

    @property
    def n_vars(self) -> int:
        return int(self.c.size)

    @property
    def n_binaries(self) -> int:
        return int(np.count_nonzero(self.integrality))

    @property
    def n_constraints(self) -> int:
        return int(self.a_matrix.shape[0])

    def milp_kwargs(self) -> dict:
        """Keyword arguments for ``scipy.optimize.milp`` (c, constraints, bounds, integrality)."""
        return {
            "c": self.c.copy(),
            "constraints": LinearConstraint(self.a_matrix, self.row_lb, self.row_ub),
            "bounds": Bounds(self.lb, self.ub),
            "integrality": self.integrality.copy(),
        }


class _Builder:
    """Collects variable blocks and sparse row triplets."""

    def __init__(self, n_slots: int) -> None:
        self.n_slots = n_slots
        self.n_vars = 0
        self.blocks: dict[str, np.ndarray] = {}
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.integ: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.row_lb: list[np.ndarray] = []
        self.row_ub: list[np.ndarray] = []
        self.n_rows = 0
        self.row_blocks: dict[str, np.ndarray] = {}

    def block(self, name: str, n_units: int, lb: np.ndarray | float, ub: np.ndarray | float,
              cost: np.ndarray | float = 0.0, binary: bool = False,
              per_slot: bool = True) -> np.ndarray:
        """Add ``n_units`` x T variables (or ``n_units`` if not per_slot); returns their indices."""
        shape = (n_units, self.n_slots) if per_slot else (n_units,)
        size = int(np.prod(shape))
        idx = np.arange(self.n_vars, self.n_vars + size).reshape(shape)
        self.n_vars += size
        self.blocks[name] = idx
        self.lb.append(np.broadcast_to(np.asarray(lb, dtype=float), shape).ravel())
        self.ub.append(np.broadcast_to(np.asarray(ub, dtype=float), shape).ravel())
        self.c.append(np.broadcast_to(np.asarray(cost, dtype=float), shape).ravel())
        self.integ.append(np.full(size, 1 if binary else 0, dtype=np.int64))
        return idx

    def new_rows(self, count: int, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
        first = self.n_rows
        self.n_rows += count
        self.row_lb.append(np.broadcast_to(np.asarray(lo, dtype=float), (count,)).ravel())
        self.row_ub.append(np.broadcast_to(np.asarray(hi, dtype=float), (count,)).ravel())
        return np.arange(first, first + count)

    def add(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray | float) -> None:
        rows, cols = np.asarray(rows), np.asarray(cols)
        if rows.shape != cols.shape:
            raise ValueError(f"row/column index shapes differ: {rows.shape} vs {cols.shape}")
        self.rows.append(rows.ravel())
        self.cols.append(cols.ravel())
        self.vals.append(np.broadcast_to(np.asarray(vals, dtype=float), rows.shape).ravel())

    def finish(self) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray,
                              np.ndarray, np.ndarray]:
        a = sp.csr_matrix(
            (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
            shape=(self.n_rows, self.n_vars))
        return (np.concatenate(self.c), a, np.concatenate(self.row_lb),
                np.concatenate(self.row_ub), np.concatenate(self.lb), np.concatenate(self.ub),
                np.concatenate(self.integ))


def _storage(b: _Builder, case: Case, key: str, fleet: StorageFleet, hz: Horizon,
             opts: ModelOptions) -> list:
    """ESS / CS variables and rows: energy balance, charge/discharge limits with two binaries."""
    s, dt, n = hz.slots, case.slot_h, fleet.n_units
    band_lo = getattr(case, f"{key}_band_p_min_kw")
    band_hi = getattr(case, f"{key}_band_p_max_kw")
    ch_lb, ch_ub, dis_lb, dis_ub = (a[:, s] for a in charge_bounds_kw(fleet, band_lo, band_hi))
    dis_cost = fleet.discharge_cost_eur_per_kwh[:, None] * dt
    ch = b.block(f"{key}_ch", n, ch_lb, ch_ub)
    dis = b.block(f"{key}_dis", n, dis_lb, dis_ub, cost=dis_cost)
    e_cost = np.zeros((n, b.n_slots))
    value = hz.value_end_eur_per_kwh[key]
    e_req = getattr(case, f"{key}_e_req_kwh")[:, s + 1]
    e_cap = np.array(getattr(case, f"{key}_e_cap_kwh")[:, s + 1])
    split = hz.e_anchor_kwh is not None and opts.value_spread_eur_per_kwh > 0
    e_cost[:, -1] = -(value + opts.value_spread_eur_per_kwh) if split else -value
    cap_end = e_cap[:, -1].copy()
    if split:  # two-piece concave value: E_end = E_lo (<= anchor) + E_hi
        e_cap[:, -1] = np.clip(hz.e_anchor_kwh[key], e_req[:, -1], cap_end)
    e = b.block(f"{key}_e", n, e_req, e_cap, cost=e_cost)
    x_ch = b.block(f"{key}_x_ch", n, 0.0, 1.0, binary=True)
    x_dis = b.block(f"{key}_x_dis", n, 0.0, 1.0, binary=True)
    T = b.n_slots
    # energy balance: E_t - E_{t-1} - eff_ch dt ch_t + dt/eff_dis dis_t = flow_t (+ E_init at t=0)
    rhs = np.array(fleet.flow_kwh[:, s])
    rhs[:, 0] += hz.e_init_kwh[key]
    r = b.new_rows(n * T, rhs.ravel(), rhs.ravel()).reshape(n, T)
    b.row_blocks[f"{key}_balance"] = r
    b.add(r, e, 1.0)
    b.add(r[:, 1:], e[:, :-1], -1.0)
    b.add(r, ch, -(fleet.eff_charge[:, None] * dt) * np.ones((1, T)))
    b.add(r, dis, (dt / fleet.eff_discharge[:, None]) * np.ones((1, T)))
    if split:
        e_hi = b.block(f"{key}_e_hi", n, 0.0, cap_end - e_cap[:, -1],
                       cost=-(value - opts.value_spread_eur_per_kwh), per_slot=False)
        b.add(r[:, -1], e_hi, 1.0)
    # ch <= P_ch x_ch ; dis <= P_dis x_dis ; x_ch + x_dis <= 1
    r = b.new_rows(n * T, -np.inf, 0.0).reshape(n, T)
    b.add(r, ch, 1.0)
    b.add(r, x_ch, -ch_ub)
    r = b.new_rows(n * T, -np.inf, 0.0).reshape(n, T)
    b.add(r, dis, 1.0)
    b.add(r, x_dis, -dis_ub)
    r = b.new_rows(n * T, -np.inf, 1.0).reshape(n, T)
    b.add(r, x_ch, 1.0)
    b.add(r, x_dis, 1.0)
    cap_frac = getattr(opts, f"{key}_cap_frac")
    da = hz.da_p_kw[key]
    if cap_frac is not None:
        if da is None:
            raise ValueError(f"the {key} deviation cap needs a day-ahead plan")
        cap = cap_frac * np.abs(da)
        pen = opts.cap_penalty_eur_per_kwh * dt
        up = b.block(f"{key}_cap_up", n, 0.0, np.inf, cost=pen)
        dn = b.block(f"{key}_cap_dn", n, 0.0, np.inf, cost=pen)
        r = b.new_rows(n * T, (da - cap).ravel(), (da + cap).ravel()).reshape(n, T)
        b.add(r, ch, 1.0)
        b.add(r, dis, -1.0)
        b.add(r, up, -1.0)
        b.add(r, dn, 1.0)
    return [(ch, dis, x_ch, x_dis)]


def _one_direction_across_markets(b: _Builder, case: Case, market_vars: dict,
                                  exclusive: list) -> None:
    """One trading direction per slot across both markets: buying on one market (its y = 1)
    forbids selling on the other, ``sell_lem <= C_sell,lem (1 - y_wm)`` and
    ``sell_wm <= C_sell,wm (1 - y_lem)`` (two rows per slot). Without them the aggregator could
    buy wholesale and resell on the local market in the same slot whenever the local sell price
    exceeds the wholesale price, which is arbitrage, not scheduling."""
    T = b.n_slots
    for buyer, seller, sell_cap in (("wm", "lem", case.lem_sell_max_kw),
                                    ("lem", "wm", case.wm_sell_max_kw)):
        buy, _, y = market_vars[buyer]
        sell = market_vars[seller][1]
        r = b.new_rows(T, -np.inf, sell_cap).reshape(1, T)
        b.add(r, sell, 1.0)
        b.add(r, y, sell_cap)
        exclusive.append((buy, sell, y, None))


def build_model(case: Case, hz: Horizon, opts: ModelOptions) -> Model:
    """Assemble Eq. 1 and the Sec. 2.2 constraints over the horizon ``hz`` (all units kW, kWh)."""
    s, dt = hz.slots, case.slot_h
    T = int(s.size)
    n_load, n_res, n_dg = hz.load_kw.shape[0], hz.res_kw.shape[0], case.dg_p_max_kw.size
    if hz.load_kw.shape != (n_load, T) or hz.res_kw.shape != (n_res, T):
        raise ValueError("forecast arrays do not match the horizon's slot count")
    b = _Builder(T)
    ones = np.ones((1, T))
    # Eq. 1 terms, each cost * power * dt (EUR)
    dg = b.block("dg", n_dg, case.dg_p_min_kw[:, None] * ones, case.dg_p_max_kw[:, None] * ones,
                 cost=case.dg_cost_eur_per_kwh[:, None] * dt)
    gcp_cost = (case.res_curtail_cost_eur_per_kwh - case.res_cost_eur_per_kwh)[:, None] * dt
    gcp = b.block("gcp", n_res, 0.0, hz.res_kw, cost=gcp_cost)
    sup = b.block("supplier", 1, 0.0, case.supplier_p_max_kw,
                  cost=case.supplier_price_eur_per_kwh[None, s] * dt)
    dr_max = case.dr_max_frac[:, None] * hz.load_kw
    dr = b.block("dr", n_load, 0.0, dr_max, cost=case.dr_cost_eur_per_kwh[:, None] * dt)
    nsd = b.block("nsd", n_load, 0.0, hz.load_kw - dr_max,
                  cost=case.nsd_cost_eur_per_kwh[:, None] * dt)
    exclusive = []
    for key in FLEETS:
        exclusive += _storage(b, case, key, getattr(case, key), hz, opts)
    wm_price = case.wm_price_eur_per_kwh[None, s] * dt
    market_vars = {}
    for key, buy_cap, sell_cap, buy_cost, sell_cost in (
        ("wm", case.wm_buy_max_kw, case.wm_sell_max_kw, wm_price, -wm_price),
        ("lem", case.lem_buy_max_kw, case.lem_sell_max_kw,
         case.lem_buy_price_eur_per_kwh[None, s] * dt,
         -case.lem_sell_price_eur_per_kwh[None, s] * dt),
    ):
        buy = b.block(f"{key}_buy", 1, 0.0, buy_cap, cost=buy_cost)
        sell = b.block(f"{key}_sell", 1, 0.0, sell_cap, cost=sell_cost)
        y = b.block(f"{key}_y", 1, 0.0, 1.0, binary=True)
        r = b.new_rows(T, -np.inf, 0.0).reshape(1, T)
        b.add(r, buy, 1.0)
        b.add(r, y, -buy_cap)
        r = b.new_rows(T, -np.inf, sell_cap).reshape(1, T)
        b.add(r, sell, 1.0)
        b.add(r, y, sell_cap)
        exclusive.append((buy, sell, y, None))
        market_vars[key] = (buy, sell, y)
    _one_direction_across_markets(b, case, market_vars, exclusive)
    # power balance per slot: supply - consumption = load - renewable forecast
    rhs = hz.load_kw.sum(axis=0) - hz.res_kw.sum(axis=0)
    r = b.new_rows(T, rhs, rhs)
    t_of = np.arange(T)
    for idx, sign in ((dg, 1.0), (gcp, -1.0), (sup, 1.0), (dr, 1.0), (nsd, 1.0),
                      (b.blocks["ess_ch"], -1.0), (b.blocks["ess_dis"], 1.0),
                      (b.blocks["cs_ch"], -1.0), (b.blocks["cs_dis"], 1.0),
                      (market_vars["wm"][0], 1.0), (market_vars["wm"][1], -1.0),
                      (market_vars["lem"][0], 1.0), (market_vars["lem"][1], -1.0)):
        b.add(r[np.broadcast_to(t_of, idx.shape)], idx, sign)
    # constant part of Eq. 1: energy cost of the non-dispatchable forecast, as one fixed variable
    constant = float(np.sum(case.res_cost_eur_per_kwh[:, None] * hz.res_kw) * dt)
    b.block("constant", 1, 1.0, 1.0, cost=constant, per_slot=False)
    c, a, row_lb, row_ub, lb, ub, integ = b.finish()
    return Model(c=c, a_matrix=a, row_lb=row_lb, row_ub=row_ub, lb=lb, ub=ub, integrality=integ,
                 blocks=b.blocks, row_blocks=b.row_blocks, n_slots=T, exclusive=exclusive,
                 objective_constant_eur=constant)
