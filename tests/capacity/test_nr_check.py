"""The Newton-Raphson reference helper (capacity.nr_check) and the pandapower export it uses."""

from __future__ import annotations

import warnings

import numpy as np
import pandapower as pp
import pytest

from capacity.feeders import day_profiles, load_feeder, load_pandapower_net
from capacity.grid import Feeder
from capacity.helm import solve
from capacity.nr_check import NewtonRaphson
from capacity.pandapower_export import pandapower_net
from tests.capacity.conftest import build_mixed_network


def _runpp(net):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-11, numba=False)
    return net


@pytest.mark.parametrize("name", ["heimschuh-like", "cigre-lv"])
def test_exported_net_reproduces_the_original(name) -> None:
    original = _runpp(load_pandapower_net(name))
    feeder = Feeder.from_pandapower(original)
    exported = _runpp(pandapower_net(feeder))
    for table, col in (("res_bus", "vm_pu"), ("res_bus", "va_degree"),
                       ("res_line", "loading_percent"), ("res_trafo", "loading_percent")):
        ids = {"res_bus": feeder.bus_ids, "res_line": feeder.line_ids,
               "res_trafo": feeder.trafo_ids}[table]
        np.testing.assert_allclose(exported[table][col].loc[ids].to_numpy(),
                                   original[table][col].loc[ids].to_numpy(), atol=1e-8)


def test_exported_mixed_network_round_trips_through_the_import() -> None:
    feeder = Feeder.from_pandapower(build_mixed_network("lv", "Symmetrical", 5.0))
    again = Feeder.from_pandapower(pandapower_net(feeder))
    np.testing.assert_allclose(solve(again).v_pu, solve(feeder).v_pu, atol=1e-12)
    np.testing.assert_array_equal(again.line_ids, feeder.line_ids)
    np.testing.assert_array_equal(again.lines.ampacity_ka, feeder.lines.ampacity_ka)


@pytest.mark.parametrize("source", ["exported", "original"])
def test_helper_equals_helm_voltages_and_loadings(source) -> None:
    name = "heimschuh-like"
    feeder = load_feeder(name)
    prof = day_profiles(name, seed=0)
    nr = NewtonRaphson(feeder, None if source == "exported" else load_pandapower_net(name),
                       tolerance_mva=1e-10)
    rng = np.random.default_rng(5)
    p = prof.p_kw[[600, 750, 1100, 1100]] + rng.normal(0.0, 5.0, (4, feeder.n_bus))
    q = prof.q_kvar[[600, 750, 1100, 1100]]
    v_slack = np.array([1.01, 1.01, 1.0, 1.03])  # a new slack voltage is not recycled away
    res = nr.run(p, q, v_slack)
    helm = solve(feeder, p, q, v_slack_pu=v_slack)
    assert res.converged.all() and nr.n_runs == 4
    np.testing.assert_allclose(res.v_pu, helm.v_pu, atol=1e-8)
    np.testing.assert_allclose(res.line_loading_pct, helm.line_loading_pct, atol=1e-4)
    np.testing.assert_allclose(res.trafo_loading_pct, helm.trafo_loading_pct, atol=1e-4)
    assert abs(res.vm_pu[3, 0] - 1.03) < 1e-12 and abs(res.vm_pu[2, 0] - 1.0) < 1e-12
    v_abs, ok, loading = nr(p[:1], q[:1], 1.01)  # the OCM solver interface
    assert ok.all()
    np.testing.assert_allclose(v_abs, res.vm_pu[:1], atol=1e-8)
    np.testing.assert_allclose(loading, res.branch_loading_pct[:1], atol=1e-4)


def test_a_scenario_without_solution_is_reported_and_the_next_one_solves() -> None:
    feeder = load_feeder("paper-test-feeder")
    nr = NewtonRaphson(feeder)
    res = nr.run(np.outer([1.0, 80.0, 1.0], feeder.p_kw), np.outer([1.0, 80.0, 1.0],
                                                                  feeder.q_kvar))
    assert res.converged.tolist() == [True, False, True]
    assert np.isnan(res.v_pu[1]).all() and np.isnan(res.line_loading_pct[1]).all()
    np.testing.assert_allclose(res.v_pu[2], res.v_pu[0], atol=1e-10)
