"""Test helper: pandapower's Newton-Raphson as an OCM voltage solver (the independent reference).

``NewtonRaphsonSolver(net, bus_ids)`` runs ``pandapower.runpp`` once on the net with every load
and static generator zeroed (so the network model, shunts and slack are pandapower's own), then
solves each scenario with pandapower's ``newtonpf`` on that model, only replacing the bus power
injections and the slack magnitude. ``check_against_runpp`` validates this fast path against a
full ``runpp`` per scenario (used by the tests).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandapower as pp
from pandapower.pypower.newtonpf import newtonpf


class NewtonRaphsonSolver:
    """``solver(p_kw (S, n_bus), q_kvar (S, n_bus), v_slack_pu) -> (|V| (S, n_bus), converged)``.

    Columns follow ``bus_ids`` (pandapower bus indices, the Feeder's order).
    """

    def __init__(self, net: pp.pandapowerNet, bus_ids: np.ndarray) -> None:
        net = copy.deepcopy(net)
        for table in ("load", "sgen", "storage"):
            if len(net[table]):
                net[table]["p_mw"] = 0.0
                net[table]["q_mvar"] = 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runpp(net, numba=False)
        self.net = net
        internal = net._ppc["internal"]
        self.ybus = internal["Ybus"]
        self.ref, self.pv, self.pq = internal["ref"], internal["pv"], internal["pq"]
        self.v_base = internal["V"].copy()
        self.ppci = net._ppc
        self.options = dict(net._options)
        self.base_mva = float(net._ppc["baseMVA"])
        lookup = net._pd2ppc_lookups["bus"]
        self.bus_rows = np.asarray(lookup[np.asarray(bus_ids, dtype=int)], dtype=int)
        self.n_internal = self.v_base.shape[0]
        self.n_runs = 0

    def solve_one(self, p_kw: np.ndarray, q_kvar: np.ndarray, v_slack_pu: float):
        """Complex voltages (n_bus,) and success for one scenario."""
        s_bus = np.zeros(self.n_internal, dtype=complex)
        np.add.at(s_bus, self.bus_rows, -(p_kw + 1j * q_kvar) * 1e-3 / self.base_mva)
        # start from the no-load solution (keeps transformer phase shifts), scaled to the slack
        v0 = self.v_base * (v_slack_pu / np.abs(self.v_base[self.ref]).mean())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = newtonpf(
                self.ybus, s_bus, v0, self.ref, self.pv, self.pq, self.ppci, self.options
            )
        self.n_runs += 1
        v, success = out[0], bool(out[1])
        return v[self.bus_rows], success

    def __call__(self, p_kw: np.ndarray, q_kvar: np.ndarray, v_slack_pu: float):
        p_kw = np.atleast_2d(p_kw)
        q_kvar = np.atleast_2d(q_kvar)
        v_abs = np.full(p_kw.shape, np.nan)
        ok = np.zeros(p_kw.shape[0], dtype=bool)
        for i in range(p_kw.shape[0]):  # Newton-Raphson solves one scenario at a time
            v, ok[i] = self.solve_one(p_kw[i], q_kvar[i], v_slack_pu)
            v_abs[i] = np.abs(v)
        return v_abs, ok


def runpp_voltages(
    net: pp.pandapowerNet, bus_ids: np.ndarray, p_kw: np.ndarray, q_kvar: np.ndarray,
    v_slack_pu: float,
) -> np.ndarray:
    """|V| per bus from a full ``pandapower.runpp`` with one load per bus (for validation)."""
    net = copy.deepcopy(net)
    for table in ("load", "sgen", "storage"):
        if len(net[table]):
            net[table].drop(net[table].index, inplace=True)
    for b, p, q in zip(bus_ids, p_kw, q_kvar, strict=True):
        pp.create_load(net, int(b), p_mw=p / 1000.0, q_mvar=q / 1000.0)
    net.ext_grid["vm_pu"] = v_slack_pu
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, numba=False, tolerance_mva=1e-10)
    return net.res_bus.vm_pu.loc[np.asarray(bus_ids, dtype=int)].to_numpy()
