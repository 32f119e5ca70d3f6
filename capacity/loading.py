"""Line and transformer loading from bus voltages, defined exactly as pandapower's results.

pandapower (``results_branch.py``, default ``trafo_loading="current"``) computes, per branch
end, the current from the end's apparent power, ``i_ka = |S| / (sqrt(3) |V| vn_kv)``, i.e. the
magnitude of the terminal current ``I = Y_ff V_f + Y_ft V_t`` (or ``Y_tf V_f + Y_tt V_t``) of the
branch's pi model in kA, and

* line: ``loading_percent = max(i_from_ka, i_to_ka) / (max_i_ka * df * parallel) * 100``;
* transformer: ``loading_percent = max(i_hv_ka * vn_hv_kv, i_lv_ka * vn_lv_kv) * sqrt(3)
  / sn_mva * 100 / parallel / df`` with the rated (untapped) voltages of the transformer.

With per-unit currents on ``S_BASE_MVA`` and the bus's ``vn_kv`` (``i_ka = |I_pu| S_base /
(sqrt(3) vn_kv)``) both become ``|I_pu|`` times a constant per branch end, so the loading of all
branches and scenarios is a handful of vectorised array operations on the voltages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import depth_first_order

from capacity.grid import S_BASE_MVA, Feeder, line_pi_pu, trafo_branch_pu


@dataclass(frozen=True, eq=False)
class BranchLoading:
    """Terminal admittances (pu) and loading scales of the lines, then the transformers.

    Both ends of all branches are stacked (first every from end, i.e. line ``from_bus`` or
    transformer HV, then every to end): the terminal current of end ``e`` is
    ``y_a[e] V[pos_a[e]] + y_b[e] V[pos_b[e]]`` and its loading that current's magnitude times
    ``pct_per_pu[e]`` (percent per pu of current; NaN for unrated lines).
    """

    n_line: int
    n_branch: int
    pos_a: np.ndarray
    pos_b: np.ndarray
    y_a: np.ndarray
    y_b: np.ndarray
    pct_per_pu: np.ndarray

    def loading_pct(self, v_pu: np.ndarray) -> np.ndarray:
        """Loading (S, n_line + n_trafo), percent, of complex bus voltages ``v_pu`` (S, n_bus):
        the larger of the two ends' loadings."""
        ends = np.abs(self.y_a * v_pu[:, self.pos_a] + self.y_b * v_pu[:, self.pos_b])
        ends *= self.pct_per_pu
        return np.maximum(ends[:, : self.n_branch], ends[:, self.n_branch :])


def branch_loading(feeder: Feeder) -> BranchLoading:
    """The feeder's ``BranchLoading`` (built once, cached on the feeder)."""
    model = feeder._cache.get("loading")
    if model is None:
        model = _build(feeder)
        feeder._cache["loading"] = model
    return model


def _build(feeder: Feeder) -> BranchLoading:
    """Pi-model terminal admittances: a line's ``y_s + y_c / 2`` and ``-y_s`` at each end, a
    transformer's ``Y_ff = (y_s + y_hv) / |tap|^2``, ``Y_ft = -y_s / conj(tap)``,
    ``Y_tf = -y_s / tap``, ``Y_tt = y_s + y_lv`` (``capacity.grid.trafo_branch_pu``)."""
    vn = feeder.bus_vn_kv
    lines, trafos = feeder.lines, feeder.trafos
    lf = feeder.bus_positions(lines.from_bus)
    lt = feeder.bus_positions(lines.to_bus)
    y_s, y_c = line_pi_pu(lines, vn[lf], feeder.f_hz)
    th = feeder.bus_positions(trafos.hv_bus)
    tl = feeder.bus_positions(trafos.lv_bus)
    t_s, t_hv, t_lv, tap = trafo_branch_pu(trafos, vn[th], vn[tl])
    line_pct = 100.0 * S_BASE_MVA / math.sqrt(3) / lines.ampacity_ka  # times 1 / vn_kv
    trafo_pct = 100.0 * S_BASE_MVA / (trafos.sn_mva * trafos.parallel * trafos.df)
    f_pos, t_pos = np.concatenate([lf, th]), np.concatenate([lt, tl])
    return BranchLoading(
        n_line=len(lines),
        n_branch=len(lines) + len(trafos),
        pos_a=np.concatenate([f_pos, f_pos]),
        pos_b=np.concatenate([t_pos, t_pos]),
        y_a=np.concatenate([y_s + y_c / 2, (t_s + t_hv) / np.abs(tap) ** 2, -y_s, -t_s / tap]),
        y_b=np.concatenate([-y_s, -t_s / np.conj(tap), y_s + y_c / 2, t_s + t_lv]),
        pct_per_pu=np.concatenate([
            line_pct / vn[lf], trafo_pct * trafos.vn_hv_kv / vn[th],
            line_pct / vn[lt], trafo_pct * trafos.vn_lv_kv / vn[tl],
        ]),
    )


def downstream_buses(feeder: Feeder) -> np.ndarray | None:
    """(n_line + n_trafo, n_bus) bool: the buses beyond each branch, seen from the slack, on a
    radial feeder (None for a meshed one). A flow through a branch is the consumption of the
    buses beyond it (plus losses), so these sets say which devices can load a branch."""
    adm = feeder.admittance
    bl = branch_loading(feeder)
    fn = adm.bus_to_node[bl.pos_a[: bl.n_branch]]
    tn = adm.bus_to_node[bl.pos_b[: bl.n_branch]]
    edges = np.unique(np.sort(np.stack([fn, tn], axis=1), axis=1), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    if edges.shape[0] != adm.n_node - 1:
        return None
    graph = sp.coo_matrix(
        (np.ones(edges.shape[0]), (edges[:, 0], edges[:, 1])), shape=(adm.n_node,) * 2
    ).tocsr()
    order, pred = depth_first_order(graph, adm.slack_node, directed=False)
    pre = np.empty(adm.n_node, dtype=np.int64)
    pre[order] = np.arange(order.size)
    size = np.ones(adm.n_node, dtype=np.int64)
    for node in order[:0:-1]:  # once per feeder: subtree sizes, leaves first
        size[pred[node]] += size[node]
    child = np.where(pred[tn] == fn, tn, fn)
    bus_pre = pre[adm.bus_to_node][None, :]
    start = pre[child][:, None]
    return (bus_pre >= start) & (bus_pre < start + size[child][:, None])
