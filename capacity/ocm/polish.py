"""Local polish of the GA's best: sequential linear programming on constraint sensitivities.

Around a feasible setting ``x`` the constrained quantities ``g`` (bus voltages, and the loadings
of branches with a thermal limit in pu of their rating) are linearised, ``g(x + d) ~ g(x) + J d``
with ``J = dg/dP_c`` (per kW) from finite differences in one batched load-flow call; the LP
``max sense * sum(d)`` s.t. ``v_low + m <= |V| + J_V d <= v_high - m``, ``L + J_L d <= L_max - m``
and the box (paper Eq. 4, 5, 8) gives a direction; a batched line search along it keeps the
largest feasible fraction. When the full step leaves the limits (voltage is concave in the load,
so steps along a binding limit curve outwards) a second-order correction re-solves the LP at the
full step's actual values. A step is accepted only when it stays feasible and improves the
objective, so the result is never worse than the GA's.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from capacity.ocm.problem import COLLAPSE_VIOLATION_PU, Flows, StepProblem

_FRACTIONS = np.array([1.0, 0.998, 0.995, 0.99, 0.98, 0.95, 0.9, 0.8, 0.6, 0.4, 0.2, 0.1])
_CORRECTION_SCALES = np.array([1.0, 1.02, 1.1, 1.3, 1.6, 2.0])


def _constrained(problem: StepProblem, flows: Flows) -> np.ndarray:
    """g (S, n_bus + n_limited): |V| (pu) and the limited branches' loading (pu of rating)."""
    return np.hstack([flows.v_abs_pu, flows.loading_pct[:, problem.limited] / 100.0])


def _bounds(problem: StepProblem, n_bus: int, margin_pu: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper limits of g, tightened by ``margin_pu``."""
    n_lim = problem.limited.size
    lower = np.concatenate([np.full(n_bus, problem.v_low_pu + margin_pu), np.full(n_lim, -np.inf)])
    l_max = problem.max_loading_pct[problem.limited] / 100.0 - margin_pu
    upper = np.concatenate([np.full(n_bus, problem.v_high_pu - margin_pu), l_max])
    return lower, upper


def polish(
    problem: StepProblem,
    sense: float,
    lower_kw: np.ndarray,
    upper_kw: np.ndarray,
    x_kw: np.ndarray,
    margin_pu: float = 0.0,
    max_iterations: int = 8,
    tolerance_kw: float = 1e-4,
) -> tuple[np.ndarray, int]:
    """Improve the feasible ``x_kw`` (n_flex,) for ``sense * sum(x)``; returns (x, iterations).

    ``x_kw`` must be feasible (violation 0 with ``margin_pu``); the returned point is too.
    """
    lower_kw = np.asarray(lower_kw, dtype=float)
    upper_kw = np.asarray(upper_kw, dtype=float)
    free = np.flatnonzero(upper_kw - lower_kw > 1e-9)
    x = np.clip(np.asarray(x_kw, dtype=float), lower_kw, upper_kw)
    if free.size == 0:
        return x, 0
    span = upper_kw[free] - lower_kw[free]
    trust = span.copy()
    g_lo, g_hi = _bounds(problem, problem.incidence.shape[1], margin_pu)
    box = (lower_kw, upper_kw, free)
    iterations = 0
    for iteration in range(1, max_iterations + 1):
        iterations = iteration
        # Jacobian by one-sided differences, stepping into the box.
        h = np.maximum(1e-3 * span, 1e-4)
        h = np.where(x[free] + h <= upper_kw[free], h, -h)
        probes = np.tile(x, (free.size + 1, 1))
        probes[np.arange(1, free.size + 1), free] += h
        flows = problem.flows(probes)
        if not flows.converged.all():
            break
        g = _constrained(problem, flows)
        jac = (g[1:] - g[0]).T / h  # (n_g, n_free) per kW
        d = _lp_step(jac, g[0], g_lo, g_hi, x, box, trust, sense)
        if d is None or sense * d.sum() <= tolerance_kw:
            break
        trials, viol = _trials(problem, jac, g_lo, g_hi, x, d, box, span, sense, margin_pu)
        gain = sense * (trials.sum(axis=1) - x.sum())
        ok = np.flatnonzero((viol <= 0.0) & (gain > 0.0))
        if ok.size == 0:
            trust = np.maximum(0.25 * np.abs(d[free]), 1e-6)
            continue
        best = ok[np.argmax(gain[ok])]
        x = trials[best]
        if gain[best] <= tolerance_kw:
            break
    return x, iterations


def _trials(
    problem: StepProblem,
    jac: np.ndarray,
    g_lo: np.ndarray,
    g_hi: np.ndarray,
    x: np.ndarray,
    d: np.ndarray,
    box: tuple[np.ndarray, np.ndarray, np.ndarray],
    span: np.ndarray,
    sense: float,
    margin_pu: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Line search along ``d`` (one batched call) plus, if the full step leaves the limits, the
    second-order correction (the LP re-linearised at the full step's values, several scales).
    Returns the trial settings and their violations."""
    lower_kw, upper_kw, _ = box
    trials = np.clip(x[None, :] + _FRACTIONS[:, None] * d[None, :], lower_kw, upper_kw)
    viol, flows = problem.evaluate_flows(trials, margin_pu)
    if not (0 < viol[0] < COLLAPSE_VIOLATION_PU):
        return trials, viol
    g_full = _constrained(problem, flows)[0]
    dc = _lp_step(jac, g_full, g_lo, g_hi, trials[0], box, span, sense)
    if dc is None:
        return trials, viol
    extra = np.clip(trials[0][None, :] + _CORRECTION_SCALES[:, None] * dc[None, :],
                    lower_kw, upper_kw)
    viol_c, _ = problem.evaluate(extra, margin_pu)
    return np.vstack([trials, extra]), np.concatenate([viol, viol_c])


def _lp_step(
    jac: np.ndarray,
    g0: np.ndarray,
    g_lo: np.ndarray,
    g_hi: np.ndarray,
    x: np.ndarray,
    box: tuple[np.ndarray, np.ndarray, np.ndarray],
    trust: np.ndarray,
    sense: float,
) -> np.ndarray | None:
    """LP on the linearised limits: the step d (n_flex,) maximising ``sense * sum(d)``, or None.

    Upper-bounded-only rows (the loadings) that no step within the bounds can reach are left
    out: they cannot bind, and the LP stays the size of the voltage LP."""
    lower_kw, upper_kw, free = box
    d_lo = np.maximum(lower_kw[free] - x[free], -trust)
    d_hi = np.minimum(upper_kw[free] - x[free], trust)
    has_lo = np.isfinite(g_lo)
    reach = g0 + np.maximum(jac * d_lo, jac * d_hi).sum(axis=1)
    up = has_lo | (reach > g_hi)
    lp = linprog(
        c=-sense * np.ones(free.size),
        A_ub=np.vstack([-jac[has_lo], jac[up]]),
        b_ub=np.concatenate([g0[has_lo] - g_lo[has_lo], g_hi[up] - g0[up]]),
        bounds=list(zip(d_lo, d_hi, strict=True)),
        method="highs",
    )
    if lp.status != 0:
        return None
    d = np.zeros_like(x)
    d[free] = lp.x
    return d
