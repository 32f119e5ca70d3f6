"""Solver path: LP relaxation first, integral-feasibility check, then the MILP (HiGHS).

The binaries of the H-ERM model carry no cost, so an LP optimum in which no unit charges and
discharges at once and nothing is bought (on either market) while something is sold (on either)
is also MILP-optimal once
the binaries are set from it (the LP value is a lower bound the MILP attains). Otherwise
``scipy.optimize.milp`` runs with an explicit relative gap and time limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog, milp

from market.aggregator.model import Model

POWER_TOL_KW = 1e-6
ROW_TOL = 1e-6


@dataclass(frozen=True)
class SolverOptions:
    """``mip_rel_gap``: relative MIP gap (HiGHS default is 1e-4); ``time_limit_s`` per solve."""

    mip_rel_gap: float = 1e-7
    time_limit_s: float = 10.0
    lp_first: bool = True

    def __post_init__(self) -> None:
        if not (0 <= self.mip_rel_gap < 1):
            raise ValueError(f"mip_rel_gap must lie in [0, 1), got {self.mip_rel_gap}")
        if not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be positive, got {self.time_limit_s}")


@dataclass(frozen=True)
class SolveStats:
    """Statistics of one solve: which path gave the answer, times (s), gap and nodes."""

    method: str            # "lp-integral" or "milp"
    status: int
    message: str
    lp_time_s: float
    milp_time_s: float
    total_time_s: float
    lp_objective_eur: float
    mip_gap: float
    mip_node_count: int
    mip_dual_bound_eur: float
    lp_violations: int     # unit-slots with simultaneous charge/discharge or buy/sell in the LP

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def round_exclusive(model: Model, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Set the binaries from a relaxed solution; returns (x, number of exclusivity violations)."""
    x = np.array(x, dtype=float)
    violations = 0
    for a_idx, b_idx, xa_idx, xb_idx in model.exclusive:
        a_on = x[a_idx] > POWER_TOL_KW
        b_on = x[b_idx] > POWER_TOL_KW
        violations += int(np.count_nonzero(a_on & b_on))
        x[xa_idx] = a_on.astype(float)
        if xb_idx is not None:
            x[xb_idx] = (b_on & ~a_on).astype(float)
    return x, violations


def is_feasible(model: Model, x: np.ndarray, tol: float = ROW_TOL) -> bool:
    """Every row, bound and integrality of ``model`` holds at ``x`` within ``tol``."""
    ax = model.a_matrix @ x
    ok_rows = np.all(ax >= model.row_lb - tol) and np.all(ax <= model.row_ub + tol)
    ok_bounds = np.all(x >= model.lb - tol) and np.all(x <= model.ub + tol)
    ints = x[model.integrality == 1]
    return bool(ok_rows and ok_bounds and np.all(np.abs(ints - np.round(ints)) <= tol))


def solve_model(model: Model, opts: SolverOptions | None = None) -> tuple[np.ndarray, float,
                                                                           SolveStats]:
    """Solve ``model``; returns (x, objective EUR, stats). Raises RuntimeError with no solution."""
    opts = opts or SolverOptions()
    kwargs = model.milp_kwargs()
    t0 = time.perf_counter()
    lp_time = 0.0
    lp_obj = float("nan")
    violations = -1
    if opts.lp_first:
        lp_kwargs = dict(kwargs, integrality=np.zeros_like(model.integrality))
        res = milp(**lp_kwargs, options={"time_limit": opts.time_limit_s})
        lp_time = time.perf_counter() - t0
        if res.x is not None and res.status == 0:
            lp_obj = float(res.fun)
            x, violations = round_exclusive(model, res.x)
            if violations == 0 and is_feasible(model, x):
                total = time.perf_counter() - t0
                return x, float(model.c @ x), SolveStats(
                    "lp-integral", 0, "LP relaxation is integral-feasible", lp_time, 0.0, total,
                    lp_obj, 0.0, 0, lp_obj, 0)
    t1 = time.perf_counter()
    res = milp(**kwargs, options={"mip_rel_gap": opts.mip_rel_gap,
                                  "time_limit": opts.time_limit_s})
    milp_time = time.perf_counter() - t1
    if res.x is None:
        raise RuntimeError(f"H-ERM MILP found no solution (status {res.status}: {res.message})")
    x = np.array(res.x)
    ints = model.integrality == 1
    x[ints] = np.round(x[ints])
    return x, float(res.fun), SolveStats(
        "milp", int(res.status), str(res.message), lp_time, milp_time,
        time.perf_counter() - t0, lp_obj, float(getattr(res, "mip_gap", np.nan) or 0.0),
        int(getattr(res, "mip_node_count", 0) or 0),
        float(getattr(res, "mip_dual_bound", np.nan) or np.nan), max(violations, 0))


def equality_duals(model: Model) -> np.ndarray:
    """Duals (EUR per unit of right-hand side) of every row of the LP relaxation of ``model``.

    Only equality rows get a value (inequality rows are set to 0); used for the marginal value
    of stored energy. Binaries are relaxed to [0, 1].
    """
    a = model.a_matrix
    eq = model.row_lb == model.row_ub
    up = ~eq & np.isfinite(model.row_ub)
    lo = ~eq & np.isfinite(model.row_lb)
    a_ub = sp.vstack([a[up], -a[lo]]).tocsr()
    b_ub = np.concatenate([model.row_ub[up], -model.row_lb[lo]])
    res = linprog(model.c, A_ub=a_ub, b_ub=b_ub, A_eq=a[eq], b_eq=model.row_lb[eq],
                  bounds=np.column_stack([model.lb, model.ub]), method="highs")
    if res.status != 0:
        raise RuntimeError(f"LP relaxation for the storage values failed: {res.message}")
    duals = np.zeros(model.n_constraints)
    duals[eq] = res.eqlin.marginals
    return duals
