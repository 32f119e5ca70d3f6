"""``BandResult``: the bands of ``compute_bands`` with diagnostics, and which constraint binds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from capacity.flexibility import Flexibility

#: Label of a band side where every device reaches its rated limit (no grid constraint binds).
RATING = "rating"


def _no_steps() -> np.ndarray:
    return np.zeros((0, 0))


def _no_ids() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class BandResult:
    """Bands and diagnostics for T steps and n_flex flexibilities (kW, pu, percent).

    ``v_at_max_pu`` / ``v_at_min_pu`` (T, n_bus): bus voltages with every flexibility at its
    P_max / P_min (the paper's Fig. 7b/11d worst cases). ``v_random_stats_pu`` (T, 5): min, q25,
    median, q75, max of all bus voltages over the random certification points (Fig. 8/11).
    ``argmax_kw`` / ``argmin_kw``: the optimiser's vectors before band formation.
    ``violation_pu``: 0 for certified steps, the smallest violation found for infeasible ones
    (pu of voltage, or of a branch's rating for an overload).

    Thermal limits: ``line_ids`` / ``trafo_ids`` name the branch columns (lines, then
    transformers) of ``loading_at_max_pct`` / ``loading_at_min_pct`` (T, n_branch), the loadings
    with every flexibility at P_max / P_min, and ``loading_box_max_pct``, each branch's largest
    loading over all certification points (corners and random points inside the box); NaN for
    unrated lines. ``max_loading_pct`` (n_branch,) the limits used (inf: none).
    ``binding_max`` / ``binding_min`` (T,): the constraint that limits P_max / P_min, i.e. the
    one closest to its limit at that corner: ``"v_low"``, ``"v_high"``, ``"line <id>"``,
    ``"trafo <id>"``, or ``"rating"`` when every device is at its rated limit on that side.
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
    line_ids: np.ndarray = field(default_factory=_no_ids)
    trafo_ids: np.ndarray = field(default_factory=_no_ids)
    max_loading_pct: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loading_at_min_pct: np.ndarray = field(default_factory=_no_steps)
    loading_at_max_pct: np.ndarray = field(default_factory=_no_steps)
    loading_box_max_pct: np.ndarray = field(default_factory=_no_steps)
    binding_min: list[str] = field(default_factory=list)
    binding_max: list[str] = field(default_factory=list)

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

    @property
    def line_loading_at_max_pct(self) -> np.ndarray:
        """Line loadings (T, n_line) with every flexibility at P_max, percent."""
        return self.loading_at_max_pct[:, : len(self.line_ids)]

    @property
    def trafo_loading_at_max_pct(self) -> np.ndarray:
        """Transformer loadings (T, n_trafo) with every flexibility at P_max, percent."""
        return self.loading_at_max_pct[:, len(self.line_ids) :]

    @property
    def line_loading_max_pct(self) -> np.ndarray:
        """Largest loading (T, n_line) of each line over the certification points, percent."""
        return self.loading_box_max_pct[:, : len(self.line_ids)]

    @property
    def trafo_loading_max_pct(self) -> np.ndarray:
        """Largest loading (T, n_trafo) of each transformer over the certification points."""
        return self.loading_box_max_pct[:, len(self.line_ids) :]


def branch_names(line_ids: np.ndarray, trafo_ids: np.ndarray) -> list[str]:
    """Constraint labels of the branches: ``"line <id>"``, then ``"trafo <id>"``."""
    return [f"line {int(i)}" for i in line_ids] + [f"trafo {int(i)}" for i in trafo_ids]


def binding_constraint(
    v_abs_pu: np.ndarray,
    loading_pct: np.ndarray,
    v_low_pu: float,
    v_high_pu: float,
    max_loading_pct: np.ndarray,
    names: list[str],
) -> str:
    """The constraint with the least headroom at one operating point: voltage headroom in pu,
    loading headroom in pu of the rating ((limit - loading) / 100); branches without a limit
    or a rating do not count."""
    headroom = [float(v_abs_pu.min()) - v_low_pu, v_high_pu - float(v_abs_pu.max())]
    labels = ["v_low", "v_high"]
    limited = np.flatnonzero(np.isfinite(max_loading_pct) & np.isfinite(loading_pct))
    if limited.size:
        room = (max_loading_pct[limited] - loading_pct[limited]) / 100.0
        k = int(np.argmin(room))
        headroom.append(float(room[k]))
        labels.append(names[int(limited[k])])
    return labels[int(np.argmin(headroom))]
