"""One OCM time step as a batched feasibility oracle (paper Eq. 4, 5 and 13).

A *scenario* is a vector of flexibility powers ``x_kw`` (n_flex,). Its bus injections are the
uncontrollable net consumption of the step plus each flexibility's power at its bus at unity
power factor; the voltage solver (HELM by default) returns the bus voltage magnitudes, and the
violation is how far the worst bus lies outside ``[v_low, v_high]`` (pu, 0 when inside).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: Violation (pu) reported for a scenario without an operable load-flow solution (collapse).
COLLAPSE_VIOLATION_PU = 1.0

#: ``solver(p_kw (S, n_bus), q_kvar (S, n_bus), v_slack_pu)``
#: ``-> (v_abs_pu (S, n_bus), converged (S,))``
VoltageSolver = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]


@dataclass
class StepProblem:
    """The voltage constraints of one time step, evaluated for a batch of flexibility settings.

    ``incidence_kw`` (n_flex, n_bus) maps flexibility powers (kW) to bus consumption (kW);
    ``p_base_kw``/``q_base_kvar`` (n_bus,) are the uncontrollable net consumption of the step.
    """

    solver: VoltageSolver
    incidence: np.ndarray
    p_base_kw: np.ndarray
    q_base_kvar: np.ndarray
    v_slack_pu: float
    v_low_pu: float
    v_high_pu: float
    n_evaluations: int = field(default=0)
    n_calls: int = field(default=0)

    def voltages(self, x_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """|V| (S, n_bus) pu and ``converged`` (S,) for settings ``x_kw`` (S, n_flex), one call."""
        x_kw = np.atleast_2d(np.asarray(x_kw, dtype=float))
        p_kw = self.p_base_kw[None, :] + x_kw @ self.incidence
        q_kvar = np.broadcast_to(self.q_base_kvar, p_kw.shape)
        v_abs_pu, converged = self.solver(p_kw, np.ascontiguousarray(q_kvar), self.v_slack_pu)
        self.n_evaluations += x_kw.shape[0]
        self.n_calls += 1
        return np.asarray(v_abs_pu, dtype=float), np.asarray(converged, dtype=bool)

    def violation_of(
        self, v_abs_pu: np.ndarray, converged: np.ndarray, margin_pu: float = 0.0
    ) -> np.ndarray:
        """Worst limit excess (S,) in pu of solved voltages; limits tightened by ``margin_pu``."""
        under = (self.v_low_pu + margin_pu) - v_abs_pu.min(axis=1)
        over = v_abs_pu.max(axis=1) - (self.v_high_pu - margin_pu)
        viol = np.maximum(np.maximum(under, over), 0.0)
        return np.where(converged & np.isfinite(viol), viol, COLLAPSE_VIOLATION_PU)

    def evaluate(self, x_kw: np.ndarray, margin_pu: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Violation (S,) in pu and |V| (S, n_bus) for settings ``x_kw`` (S, n_flex)."""
        v_abs_pu, converged = self.voltages(x_kw)
        return self.violation_of(v_abs_pu, converged, margin_pu), v_abs_pu
