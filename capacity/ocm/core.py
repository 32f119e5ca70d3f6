"""``compute_bands``: OCM bands per flexibility and time step, certified (paper section 2.2).

For each step t: the uncontrollable net consumption ``p_kw[t]``, ``q_kvar[t]`` (n_bus,) replaces
the feeder's base loads, each flexibility's power is added at its bus at unity power factor, the
band box is optimised (``capacity.ocm.bands``), certified with the load flow at its corners and
at random points inside it (``capacity.ocm.certify``, paper Eq. 14) and published only with zero
violations. A step where no setting meets the limits is marked infeasible, gets the smallest
violation found and falls back to its safest setting (a zero-width band).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from capacity.flexibility import Flexibility
from capacity.ocm.bands import OBJECTIVES, BandSolver, StepSolution
from capacity.ocm.certify import certify, certify_or_shrink
from capacity.ocm.ga import GaSettings
from capacity.ocm.problem import StepProblem, VoltageSolver


@dataclass
class BandResult:
    """Bands and diagnostics for T steps and n_flex flexibilities (kW, pu).

    ``v_at_max_pu`` / ``v_at_min_pu`` (T, n_bus): bus voltages with every flexibility at its
    P_max / P_min (the paper's Fig. 7b/11d worst cases). ``v_random_stats_pu`` (T, 5): min, q25,
    median, q75, max of all bus voltages over the random certification points (Fig. 8/11).
    ``argmax_kw`` / ``argmin_kw``: the optimiser's vectors before band formation.
    ``violation_pu``: 0 for certified steps, the smallest violation found for infeasible ones.
    """

    flexibilities: tuple[Flexibility, ...]
    objective: str
    v_low_pu: float
    v_high_pu: float
    p_min_kw: np.ndarray
    p_max_kw: np.ndarray
    feasible: np.ndarray
    violation_pu: np.ndarray
    v_at_min_pu: np.ndarray
    v_at_max_pu: np.ndarray
    v_random_stats_pu: np.ndarray
    argmin_kw: np.ndarray
    argmax_kw: np.ndarray
    certified_points: np.ndarray
    shrinks: np.ndarray
    notes: list[str]
    n_evaluations: np.ndarray
    seconds: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return int(self.p_min_kw.shape[0])

    @property
    def v_min_at_max_pu(self) -> np.ndarray:
        """Lowest bus voltage per step with all flexibilities at P_max (T,)."""
        return self.v_at_max_pu.min(axis=1)

    @property
    def v_max_at_min_pu(self) -> np.ndarray:
        """Highest bus voltage per step with all flexibilities at P_min (T,)."""
        return self.v_at_min_pu.max(axis=1)


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
    """The default voltage solver: HELM (``capacity.helm.solve``), |V| and convergence."""
    from capacity.helm import solve

    def _solve(p_kw: np.ndarray, q_kvar: np.ndarray, v_slack_pu: float):
        res = solve(feeder, p_kw=p_kw, q_kvar=q_kvar, v_slack_pu=v_slack_pu)
        return np.abs(res.v_pu), np.asarray(res.converged, dtype=bool)

    return _solve


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
) -> BandResult:
    """Certified OCM bands (kW) for every step of ``p_kw``/``q_kvar`` (T, n_bus).

    ``objective``: "sum" (paper Eq. 2-3), "two-step" (battery first, Eq. 15-16) or "fair"
    (max-min share of ``p_high``, then the sum). ``margin_pu`` tightens the limits inside the
    optimiser only; certification uses ``[v_low, v_high]``. ``solver`` replaces HELM (e.g. by a
    Newton-Raphson wrapper for benchmarks). Deterministic for a given ``seed``.
    ``warm_from``: a previous result for the same flexibilities whose last step warm-starts the
    first step here (for callers that compute one interval at a time, like the oracle loop).
    ``blas_threads``: BLAS threads while solving (1 is much faster for the many small batched
    solves on a shared machine; None leaves the BLAS default).
    """
    if blas_threads is None:
        return _compute_bands(
            feeder, flexibilities, p_kw, q_kvar, v_slack_pu, v_low, v_high, objective, seed,
            n_random, ga, margin_pu, use_polish, warm_start, warm_from, solver, progress,
        )
    with threadpool_limits(limits=blas_threads):
        return _compute_bands(
            feeder, flexibilities, p_kw, q_kvar, v_slack_pu, v_low, v_high, objective, seed,
            n_random, ga, margin_pu, use_polish, warm_start, warm_from, solver, progress,
        )


def _empty_outputs(n_steps: int, n_bus: int, n_flex: int) -> dict[str, np.ndarray]:
    """Zeroed per-step arrays of a ``BandResult``."""
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
    }


def _certify_step(
    problem: StepProblem,
    sol: StepSolution,
    n_random: int,
    rng: np.random.Generator,
    out: dict[str, np.ndarray],
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
    return note


def _compute_bands(
    feeder, flexibilities, p_kw, q_kvar, v_slack_pu, v_low, v_high, objective, seed,
    n_random, ga, margin_pu, use_polish, warm_start, warm_from, solver, progress,
) -> BandResult:
    """The body of ``compute_bands`` (same arguments)."""
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    flexibilities, incidence, p, q, vs = _validate(
        feeder, flexibilities, p_kw, q_kvar, v_slack_pu, v_low, v_high, objective
    )
    solver = solver or helm_voltage_solver(feeder)
    band_solver = BandSolver(flexibilities, objective, ga, margin_pu, use_polish)
    n_steps, n_bus = p.shape
    out = _empty_outputs(n_steps, n_bus, len(flexibilities))
    notes: list[str] = []
    steps: Any = range(n_steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc=f"OCM {objective}", unit="step")
    warm: StepSolution | None = None
    if warm_from is not None:
        if tuple(warm_from.flexibilities) != flexibilities:
            raise ValueError("warm_from was computed for other flexibilities")
        a, b = warm_from.argmin_kw[-1], warm_from.argmax_kw[-1]
        warm = StepSolution(a, b, a, b, a, True)
    for t in steps:
        started = time.perf_counter()
        problem = StepProblem(solver, incidence, p[t], q[t], float(vs[t]), v_low, v_high)
        s = step_seed(seed, t)
        sol = band_solver.solve_step(problem, warm if warm_start else None, s)
        note = _certify_step(problem, sol, n_random, np.random.default_rng(s), out, t)
        out["n_evaluations"][t] = problem.n_evaluations
        out["seconds"][t] = time.perf_counter() - started
        notes.append(note)
        warm = sol if sol.feasible else warm
    return BandResult(
        flexibilities=flexibilities,
        objective=objective,
        v_low_pu=float(v_low),
        v_high_pu=float(v_high),
        notes=notes,
        meta={"seed": int(seed), "n_random": int(n_random), "margin_pu": float(margin_pu)},
        **out,
    )
