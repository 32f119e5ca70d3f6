"""Feeder model: buses, lines, two-winding transformers, shunts, one slack and the base-case load.

The model keeps engineering data (ohm per km, percent, kW) so that it can be written to and read
from the project's feeder file format (``capacity.feeder_io``) and imported from pandapower
(``Feeder.from_pandapower``). ``Feeder.admittance`` derives the per-unit admittance model that the
HELM solver (``capacity.helm``) uses: the series part ``Y`` and the shunt part ``Y_shunt`` of the
OCM paper's Eq. 10 (Rao et al. 2021, section 2.2.3), in the node space where buses joined by
closed bus-bus switches are fused into one node.

Conventions: power base ``S_BASE_MVA = 1``; voltage base of a bus is its nominal voltage
``vn_kv``; per-bus ``p_kw`` / ``q_kvar`` are net consumption (injection negative). Transformers
follow pandapower's default model (``trafo_model="t"``, ``calculate_voltage_angles=True``),
reproduced formula by formula from pandapower 3.5 (``pandapower/build_branch.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from capacity.flexibility import Flexibility
from capacity.tables import (
    TAP_CHANGER_TYPES,
    LineTable,
    ShuntTable,
    Slack,
    TrafoTable,
    as_float_array,
    as_int_array,
    element_names,
)

__all__ = [
    "S_BASE_MVA",
    "TAP_CHANGER_TYPES",
    "AdmittanceModel",
    "Feeder",
    "LineTable",
    "ShuntTable",
    "Slack",
    "TrafoTable",
    "feeder_summary",
    "trafo_branch_pu",
]

S_BASE_MVA = 1.0
"""Power base of the per-unit system (MVA)."""

@dataclass(frozen=True, eq=False)
class AdmittanceModel:
    """Per-unit admittance model in node space (closed bus-bus switches fuse buses into nodes).

    ``y_series`` (n_node x n_node, CSC): the series part of Eq. 10, including the transformers'
    off-nominal ratio and phase shift; ``y_shunt`` (n_node,): line charging, transformer
    magnetising branches and shunts. ``bus_to_node`` maps each entry of ``bus_ids`` to its node.
    """

    n_node: int
    bus_to_node: np.ndarray
    slack_node: int
    pq_nodes: np.ndarray
    y_series: sp.csc_matrix
    y_shunt: np.ndarray
    v_slack_pu: complex

    @property
    def y_bus(self) -> sp.csc_matrix:
        """Full nodal admittance matrix Y_series + diag(Y_shunt) (pu)."""
        return (self.y_series + sp.diags(self.y_shunt)).tocsc()


@dataclass(frozen=True, eq=False)
class Feeder:
    """A radial or meshed distribution feeder with one slack bus.

    ``bus_ids`` identify buses (pandapower's ``net.bus.index``); ``p_kw`` / ``q_kvar`` are the
    base-case net consumption per bus (loads minus static generators, kW / kvar), in
    ``bus_ids`` order. ``bus_links`` are pairs of bus ids joined by closed zero-impedance
    switches (fused into one node; each bus keeps its id and gets the node's voltage).
    """

    name: str
    bus_ids: np.ndarray
    bus_vn_kv: np.ndarray
    slack: Slack
    lines: LineTable = field(default_factory=LineTable.empty)
    trafos: TrafoTable = field(default_factory=TrafoTable.empty)
    shunts: ShuntTable = field(default_factory=ShuntTable.empty)
    p_kw: np.ndarray | None = None
    q_kvar: np.ndarray | None = None
    bus_links: np.ndarray | None = None
    bus_names: tuple[str, ...] = ()
    flexibilities: tuple[Flexibility, ...] = ()
    f_hz: float = 50.0
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        set_ = object.__setattr__
        bus_ids = as_int_array(self.bus_ids, "bus_ids")
        n = bus_ids.shape[0]
        if n == 0:
            raise ValueError("feeder has no buses")
        if np.unique(bus_ids).shape[0] != n:
            raise ValueError("bus_ids must be unique")
        set_(self, "bus_ids", bus_ids)
        vn = as_float_array(self.bus_vn_kv, "bus_vn_kv", n)
        if not np.all(np.isfinite(vn) & (vn > 0)):
            raise ValueError("bus_vn_kv must be finite and > 0")
        set_(self, "bus_vn_kv", vn)
        set_(self, "bus_names", element_names(self.bus_names or None, n, "bus"))
        p = np.zeros(n) if self.p_kw is None else as_float_array(self.p_kw, "p_kw", n)
        q = np.zeros(n) if self.q_kvar is None else as_float_array(self.q_kvar, "q_kvar", n)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise ValueError("p_kw and q_kvar must be finite (NaN or infinite load)")
        p.flags.writeable = False
        q.flags.writeable = False
        bus_ids.flags.writeable = False
        set_(self, "p_kw", p)
        set_(self, "q_kvar", q)
        links = np.zeros((0, 2), dtype=np.int64) if self.bus_links is None else self.bus_links
        links = as_int_array(links, "bus_links").reshape(-1, 2)
        set_(self, "bus_links", links)
        if not (math.isfinite(self.f_hz) and self.f_hz > 0):
            raise ValueError("f_hz must be > 0")
        set_(self, "flexibilities", tuple(self.flexibilities))
        self._check_references()
        self._check_impedances()
        self.admittance  # noqa: B018  (builds the model: islanded buses raise here)

    def _check_references(self) -> None:
        known = set(self.bus_ids.tolist())
        refs = {
            "line from_bus": self.lines.from_bus,
            "line to_bus": self.lines.to_bus,
            "trafo hv_bus": self.trafos.hv_bus,
            "trafo lv_bus": self.trafos.lv_bus,
            "shunt bus": self.shunts.bus,
            "bus_links": self.bus_links.reshape(-1),
        }
        for what, ids in refs.items():
            unknown = sorted(set(ids.tolist()) - known)
            if unknown:
                raise ValueError(f"{what} refers to unknown bus ids {unknown[:10]}")
        if self.slack.bus_id not in known:
            raise ValueError(f"no slack: slack bus {self.slack.bus_id} is not a bus of the feeder")
        for flex in self.flexibilities:
            if flex.bus_id not in known:
                raise ValueError(f"flexibility {flex.name!r} is at unknown bus {flex.bus_id}")

    def _check_impedances(self) -> None:
        lines = self.lines
        z_ohm = np.hypot(lines.r_ohm_per_km, lines.x_ohm_per_km) * lines.length_km
        bad = np.flatnonzero(~(z_ohm > 0))
        if bad.size:
            names = [lines.names[i] for i in bad[:5]]
            raise ValueError(
                f"zero-impedance line(s) {names} (r, x or length is zero); "
                "model a zero-impedance connection as a bus link instead"
            )
        vn = dict(zip(self.bus_ids.tolist(), self.bus_vn_kv.tolist(), strict=True))
        for a, b in self.bus_links.tolist():
            if not math.isclose(vn[a], vn[b], rel_tol=1e-9):
                raise ValueError(f"bus link {a}-{b} joins buses of different nominal voltage")

    # ------------------------------------------------------------------ accessors
    @property
    def n_bus(self) -> int:
        """Number of buses."""
        return int(self.bus_ids.shape[0])

    @property
    def line_ids(self) -> np.ndarray:
        """Ids of the lines (pandapower's ``net.line.index`` when imported), in the column order
        of ``line_loading_pct`` and every per-line array."""
        return self.lines.ids

    @property
    def trafo_ids(self) -> np.ndarray:
        """Ids of the transformers (pandapower's ``net.trafo.index``), in the column order of
        ``trafo_loading_pct``."""
        return self.trafos.ids

    def bus_position(self, bus_id: int) -> int:
        """Column of ``bus_id`` in ``bus_ids`` order (ValueError if unknown)."""
        pos = self._cache.get("bus_position")
        if pos is None:
            pos = {int(b): i for i, b in enumerate(self.bus_ids.tolist())}
            self._cache["bus_position"] = pos
        try:
            return pos[int(bus_id)]
        except KeyError:
            raise ValueError(f"unknown bus id {bus_id}") from None

    def bus_positions(self, bus_ids: Any) -> np.ndarray:
        """Columns of ``bus_ids`` (an array of known bus ids) in ``bus_ids`` order."""
        ids = np.asarray(bus_ids).reshape(-1)
        if not ids.size:
            return np.zeros(0, dtype=np.int64)
        self.bus_position(int(ids[0]))  # builds the cached id -> position map
        pos = self._cache["bus_position"]
        try:
            return np.fromiter((pos[int(b)] for b in ids.tolist()), np.int64, count=ids.size)
        except KeyError as exc:
            raise ValueError(f"unknown bus id {exc.args[0]}") from None

    def with_loads(self, p_kw: Any, q_kvar: Any) -> Feeder:
        """A copy with another base case (kW / kvar per bus), sharing the network caches."""
        p = as_float_array(p_kw, "p_kw", self.n_bus)
        q = as_float_array(q_kvar, "q_kvar", self.n_bus)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise ValueError("p_kw and q_kvar must be finite (NaN or infinite load)")
        new = object.__new__(Feeder)
        for f in self.__dataclass_fields__:
            object.__setattr__(new, f, getattr(self, f))
        p.flags.writeable = False
        q.flags.writeable = False
        object.__setattr__(new, "p_kw", p)
        object.__setattr__(new, "q_kvar", q)
        return new

    def with_flexibilities(self, flexibilities: Sequence[Flexibility]) -> Feeder:
        """A copy with the given flexibilities (checked against the buses), sharing caches."""
        new = self.with_loads(self.p_kw, self.q_kvar)
        object.__setattr__(new, "flexibilities", tuple(flexibilities))
        new._check_references()
        return new

    # ------------------------------------------------------------------ per-unit model
    @property
    def admittance(self) -> AdmittanceModel:
        """The per-unit admittance model (built once and cached)."""
        model = self._cache.get("admittance")
        if model is None:
            model = _build_admittance(self)
            self._cache["admittance"] = model
        return model

    # ------------------------------------------------------------------ pandapower
    @classmethod
    def from_pandapower(cls, net: Any, name: str | None = None) -> Feeder:
        """Import a pandapower network (see module docstring for the supported elements).

        Lines, two-winding trafos, loads, sgens, storages, shunts, one ext_grid and switches
        (closed bus-bus switches fuse their buses, an open line switch disconnects that end of
        the line; the open-ended line's charging stays as an equivalent shunt, as pandapower
        models it). Out-of-service elements and buses are ignored; any other element table with
        in-service rows raises ValueError naming it.
        """
        from capacity.pandapower_import import feeder_kwargs_from_pandapower  # pandas: lazily

        kwargs = feeder_kwargs_from_pandapower(net)
        return cls(name=name or str(getattr(net, "name", "") or "pandapower"), **kwargs)


def _union_find_nodes(n_bus: int, pairs: np.ndarray) -> np.ndarray:
    """Node index per bus after fusing the bus pairs (positions), nodes numbered 0..n_node-1."""
    if pairs.shape[0] == 0:
        return np.arange(n_bus)
    graph = sp.coo_matrix(
        (np.ones(pairs.shape[0]), (pairs[:, 0], pairs[:, 1])), shape=(n_bus, n_bus)
    )
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def trafo_branch_pu(
    trafos: TrafoTable, vn_hv_bus_kv: np.ndarray, vn_lv_bus_kv: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pandapower's default transformer model as a pi branch (pu on ``S_BASE_MVA``).

    Returns (series admittance y_s, shunt admittance at the HV end before the ratio, shunt
    admittance at the LV end, complex ratio ``tap = ratio * exp(j shift)``), so that the branch
    has Yff = (y_s + y_hv) / |tap|^2, Yft = -y_s / conj(tap), Ytf = -y_s / tap, Ytt = y_s + y_lv
    (pandapower ``_calc_branch_values_from_trafo_df``, ``_wye_delta`` and ``branch_vectors``).
    """
    n = len(trafos)
    vnh = trafos.vn_hv_kv.copy()
    vnl = trafos.vn_lv_kv.copy()
    shift_deg = trafos.shift_degree.copy()
    tap_diff = np.nan_to_num(trafos.tap_pos - trafos.tap_neutral, nan=0.0)
    step_pct = trafos.tap_step_percent
    step_deg = trafos.tap_step_degree
    for i in range(n):  # loop over transformers (a handful), not buses or scenarios
        side, kind = trafos.tap_side[i], trafos.tap_changer_type[i]
        if side == "" or kind == "" or not math.isfinite(trafos.tap_pos[i]):
            continue
        direction = 1.0 if side == "hv" else -1.0
        if kind == "ideal":
            deg_set = math.isfinite(step_deg[i]) and step_deg[i] != 0
            pct_set = math.isfinite(step_pct[i]) and step_pct[i] != 0
            if deg_set and pct_set:
                raise ValueError(f"trafo {trafos.names[i]!r}: both tap step percent and degree set")
            if deg_set:
                shift_deg[i] += direction * tap_diff[i] * step_deg[i]
            else:
                pct = step_pct[i] if math.isfinite(step_pct[i]) else 0.0
                shift_deg[i] += direction * 2 * math.degrees(math.asin(tap_diff[i] * pct / 200))
        else:  # "ratio" or "symmetrical": pandapower's complex tap changer
            steps = 0.0 if not math.isfinite(step_pct[i]) else step_pct[i] * tap_diff[i] / 100
            angle = 0.0 if not math.isfinite(step_deg[i]) else math.radians(step_deg[i])
            vn = vnh if side == "hv" else vnl
            u1 = vn[i]
            du = u1 * steps
            vn[i] = math.hypot(u1 + du * math.cos(angle), du * math.sin(angle))
            shift_deg[i] += math.degrees(
                math.atan(direction * du * math.sin(angle) / (u1 + du * math.cos(angle)))
            )
    ratio = (vnh / vnl) / (vn_hv_bus_kv / vn_lv_bus_kv)
    parallel = trafos.parallel.astype(float)
    tap_lv = np.square(vnl / vn_lv_bus_kv) * S_BASE_MVA
    z_sc = trafos.vk_percent / 100.0 / trafos.sn_mva * tap_lv
    r_sc = trafos.vkr_percent / 100.0 / trafos.sn_mva * tap_lv
    x_sc = np.sign(z_sc) * np.sqrt(z_sc**2 - r_sc**2)
    r = r_sc / parallel
    x = x_sc / parallel
    base_z = np.square(vn_lv_bus_kv) / S_BASE_MVA
    pfe_mw = trafos.pfe_kw * 1e-3
    ym_mva = trafos.i0_percent / 100.0 * trafos.sn_mva
    b_mva = -np.sqrt(np.maximum(ym_mva**2 - pfe_mw**2, 0.0))
    scale = base_z * parallel / np.square(vnl)
    g = pfe_mw * scale
    b = b_mva * scale
    y_s = np.empty(n, dtype=complex)
    y_hv = np.zeros(n, dtype=complex)
    y_lv = np.zeros(n, dtype=complex)
    magnetised = (g != 0) | (b != 0)
    plain = ~magnetised
    y_s[plain] = 1.0 / (r[plain] + 1j * x[plain])
    if magnetised.any():  # T model -> pi model (pandapower _wye_delta)
        m = magnetised
        rr = trafos.leakage_resistance_ratio_hv[m]
        xr = trafos.leakage_reactance_ratio_hv[m]
        za = r[m] * rr + 1j * x[m] * xr
        zb = r[m] * (1 - rr) + 1j * x[m] * (1 - xr)
        zc = 1.0 / (g[m] + 1j * b[m])
        z_sum = za * zb + za * zc + zb * zc
        y_s[m] = zc / z_sum
        y_hv[m] = zb / z_sum
        y_lv[m] = za / z_sum
    tap = ratio * np.exp(1j * np.deg2rad(shift_deg))
    return y_s, y_hv, y_lv, tap


def line_pi_pu(
    lines: LineTable, vn_from_kv: np.ndarray, f_hz: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pi sections of the lines (pu on ``S_BASE_MVA`` and the from bus's ``vn_kv``): series
    admittance ``1 / ((r + jx) length / parallel)`` and total shunt admittance
    ``(g + j 2 pi f c) length parallel`` (half at each end)."""
    base_z = np.square(vn_from_kv) / S_BASE_MVA
    par = lines.parallel.astype(float)
    z = (lines.r_ohm_per_km + 1j * lines.x_ohm_per_km) * lines.length_km / base_z / par
    y_c = (
        lines.g_us_per_km * 1e-6
        + 1j * 2 * math.pi * f_hz * lines.c_nf_per_km * 1e-9
    ) * base_z * lines.length_km * par
    return 1.0 / z, y_c


def _branch_stamps(
    feeder: Feeder, bus_to_node: np.ndarray, y_shunt: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of the series admittances of lines and transformers in node space;
    adds line charging, magnetising branches and shunts to ``y_shunt`` (in place)."""
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    vn = feeder.bus_vn_kv
    lines = feeder.lines
    if len(lines):
        f = feeder.bus_positions(lines.from_bus)
        t = feeder.bus_positions(lines.to_bus)
        y_s, y_c = line_pi_pu(lines, vn[f], feeder.f_hz)
        fn, tn = bus_to_node[f], bus_to_node[t]
        rows += [fn, fn, tn, tn]
        cols += [fn, tn, fn, tn]
        vals += [y_s, -y_s, -y_s, y_s]
        np.add.at(y_shunt, fn, y_c / 2)
        np.add.at(y_shunt, tn, y_c / 2)
    trafos = feeder.trafos
    if len(trafos):
        h = feeder.bus_positions(trafos.hv_bus)
        lo = feeder.bus_positions(trafos.lv_bus)
        y_s, y_hv, y_lv, tap = trafo_branch_pu(trafos, vn[h], vn[lo])
        hn, ln = bus_to_node[h], bus_to_node[lo]
        tap2 = np.abs(tap) ** 2
        rows += [hn, hn, ln, ln]
        cols += [hn, ln, hn, ln]
        vals += [y_s / tap2, -y_s / np.conj(tap), -y_s / tap, y_s]
        np.add.at(y_shunt, hn, y_hv / tap2)
        np.add.at(y_shunt, ln, y_lv)
    shunts = feeder.shunts
    if len(shunts):
        sn = bus_to_node[feeder.bus_positions(shunts.bus)]
        np.add.at(y_shunt, sn, (shunts.p_kw - 1j * shunts.q_kvar) * 1e-3 / S_BASE_MVA)
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=complex)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _check_connected(
    feeder: Feeder, rows: np.ndarray, cols: np.ndarray, bus_to_node: np.ndarray, slack_node: int
) -> None:
    """ValueError naming the buses without a path to the slack."""
    n_node = int(bus_to_node.max()) + 1
    graph = sp.coo_matrix((np.ones(rows.shape[0]), (rows, cols)), shape=(n_node, n_node))
    _, labels = connected_components(graph, directed=False)
    islanded_nodes = labels != labels[slack_node]
    if islanded_nodes.any():
        islanded = feeder.bus_ids[islanded_nodes[bus_to_node]]
        raise ValueError(
            f"islanded bus(es) without a path to the slack: {islanded[:20].tolist()}"
            + (" ..." if islanded.shape[0] > 20 else "")
        )


def _build_admittance(feeder: Feeder) -> AdmittanceModel:
    """Assemble the node-space series and shunt admittances and check connectivity."""
    link_pos = feeder.bus_positions(feeder.bus_links.reshape(-1)).reshape(-1, 2)
    bus_to_node = _union_find_nodes(feeder.n_bus, link_pos)
    n_node = int(bus_to_node.max()) + 1
    y_shunt = np.zeros(n_node, dtype=complex)
    rows, cols, vals = _branch_stamps(feeder, bus_to_node, y_shunt)
    y_series = sp.coo_matrix((vals, (rows, cols)), shape=(n_node, n_node)).tocsc()
    y_series.sum_duplicates()
    slack_node = int(bus_to_node[feeder.bus_position(feeder.slack.bus_id)])
    _check_connected(feeder, rows, cols, bus_to_node, slack_node)
    slack = feeder.slack
    v_slack = slack.vm_pu * complex(np.exp(1j * math.radians(slack.va_degree)))
    return AdmittanceModel(
        n_node=n_node,
        bus_to_node=bus_to_node,
        slack_node=slack_node,
        pq_nodes=np.flatnonzero(np.arange(n_node) != slack_node),
        y_series=y_series,
        y_shunt=y_shunt,
        v_slack_pu=v_slack,
    )


def feeder_summary(feeder: Feeder) -> Mapping[str, int]:
    """Element counts (for CLI output and logs)."""
    return {
        "buses": feeder.n_bus,
        "nodes": feeder.admittance.n_node,
        "lines": len(feeder.lines),
        "trafos": len(feeder.trafos),
        "shunts": len(feeder.shunts),
        "bus_links": int(feeder.bus_links.shape[0]),
        "flexibilities": len(feeder.flexibilities),
    }
