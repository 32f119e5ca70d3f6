"""The Newton-Raphson reference: pandapower's ``runpp`` on a feeder, scenario by scenario.

One helper for every check of HELM and of OCM bands against an independent load flow (tests,
benchmarks, the day simulation's verification): ``NewtonRaphson(feeder)`` builds the pandapower
net once (by default ``capacity.pandapower_export.pandapower_net(feeder)``; or pass the net the
feeder was imported from, e.g. ``load_pandapower_net(name)``, whose loads, static generators and
storages are then replaced by one load per bus), then ``run(p_kw, q_kvar, v_slack_pu)`` sets the
per-bus net consumption of each scenario, runs ``pandapower.runpp`` (Newton-Raphson, pandapower's
defaults; ``recycle`` of the PQ values between scenarios of the same slack voltage) and returns
pandapower's own results: bus voltages and ``res_line`` / ``res_trafo.loading_percent`` in
``feeder.line_ids`` / ``feeder.trafo_ids`` order. A scenario where runpp does not converge gets
``converged`` False and NaN results.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandapower as pp

from capacity.grid import Feeder
from capacity.pandapower_export import pandapower_net

_RECYCLE = {"trafo": False, "gen": False, "bus_pq": True}


@dataclass(frozen=True, eq=False)
class NrResult:
    """pandapower results of S scenarios: ``v_pu`` complex (S, n_bus) in ``feeder.bus_ids``
    order, ``converged`` (S,), ``line_loading_pct`` (S, n_line), ``trafo_loading_pct``
    (S, n_trafo), percent (pandapower's ``loading_percent``)."""

    v_pu: np.ndarray
    converged: np.ndarray
    line_loading_pct: np.ndarray
    trafo_loading_pct: np.ndarray

    @property
    def vm_pu(self) -> np.ndarray:
        """Voltage magnitudes (S, n_bus), pu."""
        return np.abs(self.v_pu)

    @property
    def branch_loading_pct(self) -> np.ndarray:
        """Loading (S, n_line + n_trafo): lines, then transformers (as ``HelmResult``)."""
        return np.hstack([self.line_loading_pct, self.trafo_loading_pct])


class NewtonRaphson:
    """pandapower's Newton-Raphson on one feeder (see module docstring).

    ``tolerance_mva``: runpp's power mismatch tolerance (pandapower's default 1e-8). Calling
    the object is the OCM solver interface: ``(|V| (S, n_bus), converged, loading (S, n_line +
    n_trafo))``.
    """

    def __init__(self, feeder: Feeder, net: Any = None, tolerance_mva: float = 1e-8) -> None:
        self.feeder = feeder
        if net is None:
            self.net = pandapower_net(feeder)
            self.rows = self.net.load.index.to_numpy(dtype=np.int64)
        else:
            self.net = copy.deepcopy(net)
            self.rows = _one_load_per_bus(self.net, feeder.bus_ids)
        self.tolerance_mva = float(tolerance_mva)
        self.n_runs = 0
        self._recycle_slack: float | None = None

    def run(self, p_kw: Any, q_kvar: Any, v_slack_pu: Any = None) -> NrResult:
        """Solve S scenarios of per-bus net consumption (kW / kvar, (S, n_bus) or (n_bus,));
        ``v_slack_pu``: slack magnitude, scalar or (S,), default the feeder's."""
        p = np.atleast_2d(np.asarray(p_kw, dtype=float))
        q = np.broadcast_to(np.atleast_2d(np.asarray(q_kvar, dtype=float)), p.shape)
        vs = np.broadcast_to(
            self.feeder.slack.vm_pu if v_slack_pu is None else np.asarray(v_slack_pu, float),
            (p.shape[0],),
        )
        f = self.feeder
        v = np.full(p.shape, np.nan + 0j)
        ok = np.zeros(p.shape[0], dtype=bool)
        loading = np.full((p.shape[0], len(f.lines) + len(f.trafos)), np.nan)
        for s in range(p.shape[0]):  # runpp solves one scenario per call
            ok[s] = self._runpp(p[s], q[s], float(vs[s]))
            if ok[s]:
                v[s], loading[s] = self._results()
        n_line = len(f.lines)
        return NrResult(v, ok, loading[:, :n_line], loading[:, n_line:])

    def __call__(self, p_kw: np.ndarray, q_kvar: np.ndarray, v_slack_pu: float):
        res = self.run(p_kw, q_kvar, v_slack_pu)
        return res.vm_pu, res.converged, res.branch_loading_pct

    def _runpp(self, p_kw: np.ndarray, q_kvar: np.ndarray, v_slack_pu: float) -> bool:
        net = self.net
        net.load.loc[self.rows, "p_mw"] = p_kw / 1e3
        net.load.loc[self.rows, "q_mvar"] = q_kvar / 1e3
        recycle = _RECYCLE if self._recycle_slack == v_slack_pu else None
        if recycle is None:
            net.ext_grid["vm_pu"] = v_slack_pu
        self.n_runs += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pp.runpp(net, numba=False, tolerance_mva=self.tolerance_mva, recycle=recycle)
        except pp.LoadflowNotConverged:
            self._recycle_slack = None
            return False
        self._recycle_slack = v_slack_pu
        return True

    def _results(self) -> tuple[np.ndarray, np.ndarray]:
        net, f = self.net, self.feeder
        bus = net.res_bus.loc[f.bus_ids]
        v = bus.vm_pu.to_numpy() * np.exp(1j * np.deg2rad(bus.va_degree.to_numpy()))
        line = net.res_line.loading_percent.loc[f.line_ids].to_numpy(dtype=float)
        trafo = net.res_trafo.loading_percent.loc[f.trafo_ids].to_numpy(dtype=float)
        return v, np.concatenate([line, trafo])


def _one_load_per_bus(net: Any, bus_ids: np.ndarray) -> np.ndarray:
    """Replace every load, static generator and storage of ``net`` (in place) by one load per
    bus of ``bus_ids`` (0 kW); returns their ``net.load`` rows in ``bus_ids`` order."""
    for table in ("load", "sgen", "storage"):
        if table in net and len(net[table]):
            net[table] = net[table].iloc[0:0]
    return np.array(
        [pp.create_load(net, int(b), p_mw=0.0, q_mvar=0.0, name=f"bus {int(b)}") for b in bus_ids],
        dtype=np.int64,
    )
