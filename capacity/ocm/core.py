"""``compute_bands``: OCM bands per flexibility and time step, certified (paper section 2.2).

For each step t: the uncontrollable net consumption ``p_kw[t]``, ``q_kvar[t]`` (n_bus,) replaces
the feeder's base loads, each flexibility's power is added at its bus at unity power factor, the
band box is optimised (``capacity.ocm.bands``), certified with the load flow at its corners and
at random points inside it (``capacity.ocm.certify``, paper Eq. 14) and published only with zero
violations. The constraints are the bus voltages (Eq. 5) and, by default, the loading of every
rated line and transformer (Eq. 8, at most ``max_line_loading_pct`` / ``max_trafo_loading_pct``
percent). A step where no setting meets the limits is marked infeasible, gets the smallest
violation found and falls back to its safest setting (a zero-width band).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from capacity.flexibility import Flexibility
from capacity.ocm.bands import OBJECTIVES, BandSolver, StepSolution
from capacity.ocm.certify import MAX_FULL_CORNER_FLEXIBILITIES, certify, certify_or_shrink
from capacity.ocm.ga import GaSettings
from capacity.ocm.policy import BandPolicy, policy_vectors
from capacity.ocm.problem import StepProblem, VoltageSolver
from capacity.ocm.result import RATING, BandResult, binding_constraint, branch_names

__all__ = [
    "BandResult",
    "compute_bands",
    "helm_voltage_solver",
    "loading_limits",
    "step_seed",
    "thermal_corner_masks",
]


def _validate(
    feeder: Any,
    flexibilities: Sequence[Flexibility],
    p_kw: Any,
    q_kvar: Any,
    v_slack_pu: Any,
    v_low: float,
    v_high: float,
    objective: str,
) -> tuple[tuple[Flexibility, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check the inputs; returns (flexibilities, incidence (n_flex, n_bus), p, q, v_slack (T,))."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    if not (np.isfinite(v_low) and np.isfinite(v_high) and 0 < v_low < v_high):
        raise ValueError(
            f"voltage limits need 0 < v_low < v_high, got v_low={v_low}, v_high={v_high}"
        )
    flexibilities = tuple(flexibilities)
    if not flexibilities:
        raise ValueError("no flexibilities given")
    names = [f.name for f in flexibilities]
    if len(set(names)) != len(names):
        raise ValueError(f"flexibility names must be unique, got {names}")
    n_bus = feeder.n_bus
    incidence = np.zeros((len(flexibilities), n_bus))
    for i, flex in enumerate(flexibilities):
        if not isinstance(flex, Flexibility):
            raise ValueError(f"expected a Flexibility, got {type(flex).__name__}")
        if flex.p_low_kw > flex.p_high_kw:
            raise ValueError(f"flexibility {flex.name!r}: p_low_kw > p_high_kw")
        try:
            incidence[i, feeder.bus_position(flex.bus_id)] = 1.0
        except (ValueError, KeyError):
            raise ValueError(
                f"flexibility {flex.name!r} is at unknown bus {flex.bus_id} "
                f"of feeder {feeder.name!r}"
            ) from None
    p = np.asarray(p_kw, dtype=float)
    q = np.asarray(q_kvar, dtype=float)
    if p.ndim != 2 or p.shape[1] != n_bus:
        raise ValueError(f"p_kw must have shape (T, n_bus={n_bus}), got {p.shape}")
    if q.shape != p.shape:
        raise ValueError(f"q_kvar must have the shape of p_kw {p.shape}, got {q.shape}")
    if p.shape[0] == 0:
        raise ValueError("p_kw has no time steps")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        raise ValueError("p_kw and q_kvar must be finite")
    vs = np.asarray(v_slack_pu, dtype=float)
    if vs.ndim == 0:
        vs = np.full(p.shape[0], float(vs))
    if vs.shape != (p.shape[0],):
        raise ValueError(f"v_slack_pu must be a scalar or shape (T={p.shape[0]},), got {vs.shape}")
    if not np.all(np.isfinite(vs) & (vs > 0)):
        raise ValueError("v_slack_pu must be finite and > 0")
    return flexibilities, incidence, p, q, vs


def helm_voltage_solver(feeder: Any) -> VoltageSolver:
    """The default solver: HELM (``capacity.helm.solve``): |V|, convergence and the branch
    loadings (lines, then transformers; percent, as pandapower's)."""
    from capacity.helm import solve

    def _solve(p_kw: np.ndarray, q_kvar: np.ndarray, v_slack_pu: float):
        res = solve(feeder, p_kw=p_kw, q_kvar=q_kvar, v_slack_pu=v_slack_pu)
        return np.abs(res.v_pu), np.asarray(res.converged, dtype=bool), res.branch_loading_pct

    return _solve


def loading_limits(feeder: Any, max_line_loading_pct: float, max_trafo_loading_pct: float
                   ) -> np.ndarray:
    """Loading limit per branch (n_line + n_trafo,) in percent: lines, then transformers; inf
    for lines without a rating. A feeder without ``lines``/``trafos`` has no branches."""
    for name, value in (("max_line_loading_pct", max_line_loading_pct),
                        ("max_trafo_loading_pct", max_trafo_loading_pct)):
        if math.isnan(value) or value <= 0:
            raise ValueError(f"{name} must be > 0 (inf: no limit), got {value}")
    lines, trafos = getattr(feeder, "lines", None), getattr(feeder, "trafos", None)
    line_lim = np.zeros(0) if lines is None else np.where(
        np.isfinite(lines.ampacity_ka), float(max_line_loading_pct), np.inf)
    trafo_lim = np.zeros(0) if trafos is None else np.full(
        len(trafos), float(max_trafo_loading_pct))
    return np.concatenate([line_lim, trafo_lim])


def thermal_corner_masks(feeder: Any, incidence: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Box corners that matter for branch currents when not every corner is checked (more than
    ``MAX_FULL_CORNER_FLEXIBILITIES`` devices), (K, n_flex) bool, True = device at its low
    value: per limited branch of a radial feeder, the devices beyond it low (largest reverse
    flow) and the others high (lowest voltage). Empty without thermal limits or on a meshed
    feeder (then the all-min and all-max corners and the random points are checked)."""
    n_flex = incidence.shape[0]
    none = np.zeros((0, n_flex), dtype=bool)
    limited = np.isfinite(limits)
    if n_flex <= MAX_FULL_CORNER_FLEXIBILITIES or not limited.any():
        return none
    from capacity.loading import downstream_buses

    beyond = downstream_buses(feeder)
    if beyond is None:
        return none
    masks = np.unique(beyond[limited][:, incidence.argmax(axis=1)], axis=0)
    return masks[masks.any(axis=1) & ~masks.all(axis=1)]


def step_seed(seed: int, step: int) -> int:
    """Independent, reproducible seed for one step."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0] % (2**31 - 10))


def compute_bands(
    feeder: Any,
    flexibilities: Sequence[Flexibility],
    p_kw: np.ndarray,
    q_kvar: np.ndarray,
    v_slack_pu: float | np.ndarray = 1.0,
    v_low: float = 0.95,
    v_high: float = 1.05,
    objective: str = "sum",
    seed: int = 0,
    *,
    n_random: int = 1000,
    ga: GaSettings | None = None,
    margin_pu: float = 1e-5,
    use_polish: bool = True,
    warm_start: bool = True,
    warm_from: BandResult | None = None,
    solver: VoltageSolver | None = None,
    progress: bool = False,
    blas_threads: int | None = 1,
    max_line_loading_pct: float = 100.0,
    max_trafo_loading_pct: float = 100.0,
    policy: BandPolicy | None = None,
) -> BandResult:
    """Certified OCM bands (kW) for every step of ``p_kw``/``q_kvar`` (T, n_bus).

    ``objective``: "sum" (paper Eq. 2-3), "two-step" (battery first, Eq. 15-16) or "fair"
    (max-min share of ``p_high``, then the sum). ``margin_pu`` tightens the limits inside the
    optimiser only (voltages by ``margin_pu``, loadings by ``100 * margin_pu`` percent);
    certification uses ``[v_low, v_high]`` and the loading limits. ``max_line_loading_pct`` /
    ``max_trafo_loading_pct``: loading limit of every rated line / transformer, percent of
    its rating (pandapower's ``loading_percent``; inf: no thermal limit). ``solver`` replaces
    HELM (e.g. by ``capacity.nr_check.NewtonRaphson`` for benchmarks); it must return branch
    loadings when there are thermal limits. Deterministic for a given ``seed``.
    ``warm_from``: a previous result for the same flexibilities whose last step warm-starts the
    first step here (for callers that compute one interval at a time, like the oracle loop).
    ``blas_threads``: BLAS threads while solving (1 is much faster for the many small batched
    solves on a shared machine; None leaves the BLAS default).
    ``policy``: the product band policy (``capacity.ocm.policy.BandPolicy``: stations never
    forced on, a guaranteed minimum, a fair share, then efficiency); needs ``objective="fair"``.
    None (default): the paper's objectives as they are.
    """
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    flexibilities, incidence, p, q, vs = _validate(
        feeder, flexibilities, p_kw, q_kvar, v_slack_pu, v_low, v_high, objective
    )
    vectors = None if policy is None else policy_vectors(policy, flexibilities, objective)
    limits = loading_limits(feeder, max_line_loading_pct, max_trafo_loading_pct)
    make_problem = partial(
        StepProblem, solver or helm_voltage_solver(feeder), incidence,
        v_low_pu=v_low, v_high_pu=v_high, max_loading_pct=limits,
        corner_masks=thermal_corner_masks(feeder, incidence, limits),
    )
    band_solver = BandSolver(flexibilities, objective, ga, margin_pu, use_polish, vectors)
    warm = _warm_solution(warm_from, flexibilities)
    line_ids = np.asarray(getattr(feeder, "line_ids", ()), dtype=np.int64)
    trafo_ids = np.asarray(getattr(feeder, "trafo_ids", ()), dtype=np.int64)
    names = branch_names(line_ids, trafo_ids)
    blas = (contextlib.nullcontext() if blas_threads is None
            else threadpool_limits(limits=blas_threads))
    with blas:
        out, notes = _solve_steps(make_problem, band_solver, p, q, vs, seed, n_random, warm,
                                  warm_start, progress, names)
    return BandResult(
        flexibilities=flexibilities,
        objective=objective,
        v_low_pu=float(v_low),
        v_high_pu=float(v_high),
        notes=notes,
        meta={"seed": int(seed), "n_random": int(n_random), "margin_pu": float(margin_pu),
              "max_line_loading_pct": float(max_line_loading_pct),
              "max_trafo_loading_pct": float(max_trafo_loading_pct),
              **({} if policy is None else {"policy": policy.as_dict()})},
        line_ids=line_ids,
        trafo_ids=trafo_ids,
        max_loading_pct=limits,
        **out,
    )


def _warm_solution(
    warm_from: BandResult | None, flexibilities: tuple[Flexibility, ...]
) -> StepSolution | None:
    """The last step of a previous result as the warm start of the first step."""
    if warm_from is None:
        return None
    if tuple(warm_from.flexibilities) != flexibilities:
        raise ValueError("warm_from was computed for other flexibilities")
    a, b = warm_from.argmin_kw[-1], warm_from.argmax_kw[-1]
    return StepSolution(a, b, a, b, a, True)


def _empty_outputs(n_steps: int, n_bus: int, n_flex: int, n_branch: int) -> dict[str, Any]:
    """Zeroed per-step arrays (and empty per-step label lists) of a ``BandResult``."""
    return {
        "p_min_kw": np.zeros((n_steps, n_flex)),
        "p_max_kw": np.zeros((n_steps, n_flex)),
        "argmin_kw": np.zeros((n_steps, n_flex)),
        "argmax_kw": np.zeros((n_steps, n_flex)),
        "feasible": np.zeros(n_steps, dtype=bool),
        "violation_pu": np.zeros(n_steps),
        "v_at_min_pu": np.zeros((n_steps, n_bus)),
        "v_at_max_pu": np.zeros((n_steps, n_bus)),
        "v_random_stats_pu": np.zeros((n_steps, 5)),
        "certified_points": np.zeros(n_steps, dtype=np.int64),
        "shrinks": np.zeros(n_steps, dtype=np.int64),
        "n_evaluations": np.zeros(n_steps, dtype=np.int64),
        "seconds": np.zeros(n_steps),
        "loading_at_min_pct": np.zeros((n_steps, n_branch)),
        "loading_at_max_pct": np.zeros((n_steps, n_branch)),
        "loading_box_max_pct": np.zeros((n_steps, n_branch)),
        "binding_min": [],
        "binding_max": [],
    }


def _solve_steps(
    make_problem: Any,
    band_solver: BandSolver,
    p: np.ndarray,
    q: np.ndarray,
    vs: np.ndarray,
    seed: int,
    n_random: int,
    warm: StepSolution | None,
    warm_start: bool,
    progress: bool,
    names: list[str],
) -> tuple[dict[str, Any], list[str]]:
    """Optimise and certify every step (``make_problem(p_base, q_base, v_slack)`` builds a
    step's ``StepProblem``); returns the ``BandResult`` arrays and the notes."""
    n_steps, n_bus = p.shape
    out = _empty_outputs(n_steps, n_bus, band_solver.p_low_kw.size, len(names))
    notes: list[str] = []
    steps: Any = range(n_steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"OCM {band_solver.objective}", unit="step")
    for t in steps:
        started = time.perf_counter()
        problem = make_problem(p[t], q[t], float(vs[t]))
        s = step_seed(seed, t)
        sol = band_solver.solve_step(problem, warm if warm_start else None, s)
        notes.append(_certify_step(problem, sol, n_random, np.random.default_rng(s), out, t))
        _record_binding(problem, band_solver, out, t, names)
        out["n_evaluations"][t] = problem.n_evaluations
        out["seconds"][t] = time.perf_counter() - started
        warm = sol if sol.feasible else warm
    return out, notes


def _certify_step(
    problem: StepProblem,
    sol: StepSolution,
    n_random: int,
    rng: np.random.Generator,
    out: dict[str, Any],
    t: int,
) -> str:
    """Certify step ``t``'s box (shrinking it if needed; paper Eq. 14), write its row of
    ``out`` and return its note. Infeasible steps publish their safest setting."""
    note = sol.note
    if sol.feasible:
        lo, hi, cert, shrinks = certify_or_shrink(
            problem, sol.lo_kw, sol.hi_kw, sol.anchor_kw, n_random, rng
        )
        if cert.ok:
            out["feasible"][t] = True
        else:  # even the anchor point fails against the true limits
            lo = hi = sol.anchor_kw
            out["violation_pu"][t] = cert.violation_pu
            note = "certification-failed"
        out["shrinks"][t] = shrinks
        if shrinks:
            note = (note + " shrunk").strip()
    else:
        lo = hi = sol.lo_kw
        cert = certify(problem, lo, hi, 0, rng)
        out["violation_pu"][t] = max(sol.violation_pu, cert.violation_pu)
    out["p_min_kw"][t], out["p_max_kw"][t] = lo, hi
    out["argmin_kw"][t], out["argmax_kw"][t] = sol.argmin_kw, sol.argmax_kw
    out["v_at_min_pu"][t], out["v_at_max_pu"][t] = cert.v_at_lo_pu, cert.v_at_hi_pu
    out["v_random_stats_pu"][t] = cert.v_stats_pu
    out["certified_points"][t] = cert.n_points
    out["loading_at_min_pct"][t] = cert.loading_at_lo_pct
    out["loading_at_max_pct"][t] = cert.loading_at_hi_pct
    out["loading_box_max_pct"][t] = cert.loading_max_pct
    return note


def _record_binding(
    problem: StepProblem, band_solver: BandSolver, out: dict[str, Any], t: int, names: list[str]
) -> None:
    """Append step ``t``'s binding constraints at the all-max and all-min corners (``RATING``
    where every device is at its rated limit on that side)."""
    for side, rated, x_kw, v, loading in (
        ("binding_max", band_solver.p_high_kw, out["p_max_kw"][t], out["v_at_max_pu"][t],
         out["loading_at_max_pct"][t]),
        ("binding_min", band_solver.p_low_kw, out["p_min_kw"][t], out["v_at_min_pu"][t],
         out["loading_at_min_pct"][t]),
    ):
        if np.all(np.abs(x_kw - rated) <= 1e-9):
            out[side].append(RATING)
        else:
            out[side].append(binding_constraint(
                v, loading, problem.v_low_pu, problem.v_high_pu, problem.max_loading_pct, names
            ))
