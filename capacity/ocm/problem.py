"""One OCM time step as a batched feasibility oracle (paper Eq. 4, 5, 8 and 13).

A *scenario* is a vector of flexibility powers ``x_kw`` (n_flex,). Its bus injections are the
uncontrollable net consumption of the step plus each flexibility's power at its bus at unity
power factor; the load-flow solver (HELM by default) returns the bus voltage magnitudes and the
branch loadings, and the violation is how far the worst constraint lies outside its limit: bus
voltages outside ``[v_low, v_high]`` (pu) and branch loadings above ``max_loading_pct``
(the paper's Eq. 8, line flows, as loading in percent of the rating; its excess counts in pu of
the rating, i.e. percent / 100), 0 when every constraint holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: Violation reported for a scenario without an operable load-flow solution (collapse).
COLLAPSE_VIOLATION_PU = 1.0

#: ``solver(p_kw (S, n_bus), q_kvar (S, n_bus), v_slack_pu)`` ->
#: ``(v_abs_pu (S, n_bus), converged (S,))`` or, with branch loadings,
#: ``(v_abs_pu, converged, loading_pct (S, n_branch))`` (lines, then transformers).
VoltageSolver = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, ...]]


@dataclass(frozen=True, eq=False)
class Flows:
    """Load-flow results of S scenarios: |V| (S, n_bus) pu, ``converged`` (S,) and branch
    loadings (S, n_branch) percent (no columns when the problem has no thermal limits)."""

    v_abs_pu: np.ndarray
    converged: np.ndarray
    loading_pct: np.ndarray


@dataclass
class StepProblem:
    """The constraints of one time step, evaluated for a batch of flexibility settings.

    ``incidence`` (n_flex, n_bus) maps flexibility powers (kW) to bus consumption (kW);
    ``p_base_kw``/``q_base_kvar`` (n_bus,) are the uncontrollable net consumption of the step.
    ``max_loading_pct`` (n_branch,): loading limit per branch in the solver's branch order
    (inf: no limit; empty: voltage limits only). ``corner_masks`` (K, n_flex) bool: extra box
    corners to check when not every corner is (devices True at their low value, the others at
    their high value: on a radial feeder, the devices beyond a branch exporting through it
    while the rest pull its voltage down, the worst case of that branch's reverse current).
    """

    solver: VoltageSolver
    incidence: np.ndarray
    p_base_kw: np.ndarray
    q_base_kvar: np.ndarray
    v_slack_pu: float
    v_low_pu: float
    v_high_pu: float
    max_loading_pct: np.ndarray = field(default_factory=lambda: np.zeros(0))
    corner_masks: np.ndarray | None = None
    n_evaluations: int = field(default=0)
    n_calls: int = field(default=0)
    limited: np.ndarray = field(init=False)  # branches with a finite loading limit

    def __post_init__(self) -> None:
        self.max_loading_pct = np.asarray(self.max_loading_pct, dtype=float).reshape(-1)
        self.limited = np.flatnonzero(np.isfinite(self.max_loading_pct))
        if self.corner_masks is None:
            self.corner_masks = np.zeros((0, self.incidence.shape[0]), dtype=bool)

    def flows(self, x_kw: np.ndarray) -> Flows:
        """Voltages, convergence and loadings for settings ``x_kw`` (S, n_flex), one call."""
        x_kw = np.atleast_2d(np.asarray(x_kw, dtype=float))
        p_kw = self.p_base_kw[None, :] + x_kw @ self.incidence
        q_kvar = np.broadcast_to(self.q_base_kvar, p_kw.shape)
        out = self.solver(p_kw, np.ascontiguousarray(q_kvar), self.v_slack_pu)
        self.n_evaluations += x_kw.shape[0]
        self.n_calls += 1
        n_branch = self.max_loading_pct.size
        if len(out) > 2 and n_branch:
            loading = np.asarray(out[2], dtype=float)
            if loading.shape != (x_kw.shape[0], n_branch):
                raise ValueError(f"solver loadings have shape {loading.shape}, expected "
                                 f"({x_kw.shape[0]}, {n_branch})")
        elif self.limited.size:
            raise ValueError("thermal limits need a solver that returns branch loadings")
        else:
            loading = np.zeros((x_kw.shape[0], n_branch))
        return Flows(np.asarray(out[0], dtype=float), np.asarray(out[1], dtype=bool), loading)

    def voltages(self, x_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """|V| (S, n_bus) pu and ``converged`` (S,) for settings ``x_kw`` (S, n_flex), one call."""
        flows = self.flows(x_kw)
        return flows.v_abs_pu, flows.converged

    def violation_of(
        self,
        v_abs_pu: np.ndarray,
        converged: np.ndarray,
        margin_pu: float = 0.0,
        loading_pct: np.ndarray | None = None,
    ) -> np.ndarray:
        """Worst limit excess (S,) of solved scenarios: voltage pu, loading in pu of the rating;
        limits tightened by ``margin_pu`` (loading limits by ``100 * margin_pu`` percent)."""
        under = (self.v_low_pu + margin_pu) - v_abs_pu.min(axis=1)
        over = v_abs_pu.max(axis=1) - (self.v_high_pu - margin_pu)
        viol = np.maximum(np.maximum(under, over), 0.0)
        if loading_pct is not None and self.limited.size:
            viol = np.maximum(viol, self.thermal_excess(loading_pct, margin_pu).max(axis=1))
        return np.where(converged & np.isfinite(viol), viol, COLLAPSE_VIOLATION_PU)

    def thermal_excess(self, loading_pct: np.ndarray, margin_pu: float = 0.0) -> np.ndarray:
        """Loading above the limit (S, n_limited) in pu of the rating (negative: headroom), for
        the branches with a limit (``self.limited``)."""
        lim = self.max_loading_pct[self.limited] - 100.0 * margin_pu
        return (loading_pct[:, self.limited] - lim) / 100.0

    def violations(self, flows: Flows, margin_pu: float = 0.0) -> np.ndarray:
        """``violation_of`` for ``Flows``."""
        return self.violation_of(flows.v_abs_pu, flows.converged, margin_pu, flows.loading_pct)

    def evaluate_flows(self, x_kw: np.ndarray, margin_pu: float = 0.0) -> tuple[np.ndarray, Flows]:
        """Violation (S,) and the flows for settings ``x_kw`` (S, n_flex)."""
        flows = self.flows(x_kw)
        return self.violations(flows, margin_pu), flows

    def evaluate(self, x_kw: np.ndarray, margin_pu: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Violation (S,) and |V| (S, n_bus) for settings ``x_kw`` (S, n_flex)."""
        viol, flows = self.evaluate_flows(x_kw, margin_pu)
        return viol, flows.v_abs_pu
