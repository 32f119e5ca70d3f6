"""Local polish of the GA's best: sequential linear programming on voltage sensitivities.

Around a feasible setting ``x`` the bus voltages are linearised, ``|V|(x + d) ~ |V|(x) + J d``
with ``J = d|V|/dP_c`` (pu/kW) from finite differences in one batched load-flow call; the LP
``max sense * sum(d)`` s.t. ``v_low + m <= |V| + J d <= v_high - m`` and the box (paper Eq. 4-5)
gives a direction; a batched line search along it keeps the largest feasible fraction. When the
full step leaves the limits (voltage is concave in the load, so steps along a binding limit curve
outwards) a second-order correction re-solves the LP at the full step's actual voltages. A step is
accepted only when it stays feasible and improves the objective, so the result is never worse than
the GA's.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from capacity.ocm.problem import COLLAPSE_VIOLATION_PU, StepProblem

_FRACTIONS = np.array([1.0, 0.998, 0.995, 0.99, 0.98, 0.95, 0.9, 0.8, 0.6, 0.4, 0.2, 0.1])
_CORRECTION_SCALES = np.array([1.0, 1.02, 1.1, 1.3, 1.6, 2.0])


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
    v_lo = problem.v_low_pu + margin_pu
    v_hi = problem.v_high_pu - margin_pu
    iterations = 0
    for iteration in range(1, max_iterations + 1):
        iterations = iteration
        # Jacobian by one-sided differences, stepping into the box.
        h = np.maximum(1e-3 * span, 1e-4)
        h = np.where(x[free] + h <= upper_kw[free], h, -h)
        probes = np.tile(x, (free.size + 1, 1))
        probes[np.arange(1, free.size + 1), free] += h
        v_abs, converged = problem.voltages(probes)
        if not converged.all():
            break
        jac = (v_abs[1:] - v_abs[0]).T / h  # (n_bus, n_free) pu/kW
        d = _lp_step(jac, v_abs[0], v_lo, v_hi, x, lower_kw, upper_kw, free, trust, sense)
        if d is None or sense * d.sum() <= tolerance_kw:
            break
        trials = np.clip(x[None, :] + _FRACTIONS[:, None] * d[None, :], lower_kw, upper_kw)
        viol, v_trials = problem.evaluate(trials, margin_pu)
        if viol[0] > 0 and viol[0] < COLLAPSE_VIOLATION_PU:
            # second-order correction: re-linearise the limits at the full step's voltages
            dc = _lp_step(
                jac, v_trials[0], v_lo, v_hi, trials[0], lower_kw, upper_kw, free, span, sense
            )
            if dc is not None:
                extra = np.clip(
                    trials[0][None, :] + _CORRECTION_SCALES[:, None] * dc[None, :],
                    lower_kw,
                    upper_kw,
                )
                viol_c, _ = problem.evaluate(extra, margin_pu)
                trials = np.vstack([trials, extra])
                viol = np.concatenate([viol, viol_c])
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


def _lp_step(
    jac: np.ndarray,
    v0: np.ndarray,
    v_lo: float,
    v_hi: float,
    x: np.ndarray,
    lower_kw: np.ndarray,
    upper_kw: np.ndarray,
    free: np.ndarray,
    trust: np.ndarray,
    sense: float,
) -> np.ndarray | None:
    """LP on the linearised limits: the step d (n_flex,) maximising ``sense * sum(d)``, or None."""
    bounds = list(
        zip(
            np.maximum(lower_kw[free] - x[free], -trust),
            np.minimum(upper_kw[free] - x[free], trust),
            strict=True,
        )
    )
    lp = linprog(
        c=-sense * np.ones(free.size),
        A_ub=np.vstack([-jac, jac]),
        b_ub=np.concatenate([v0 - v_lo, v_hi - v0]),
        bounds=bounds,
        method="highs",
    )
    if lp.status != 0:
        return None
    d = np.zeros_like(x)
    d[free] = lp.x
    return d
