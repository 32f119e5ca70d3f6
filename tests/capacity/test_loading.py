"""Line and transformer loading from HELM voltages against pandapower's ``loading_percent``.

Built-in feeders and pandapower LV networks (CIGRE LV with three 30-degree transformers, Kerber
networks, the mixed test network with a Dyn5 transformer with taps, parallel lines and a
parallel transformer) at several load levels, each compared with a full ``runpp`` of the net.
"""

from __future__ import annotations

import copy
import random
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from capacity.feeders import FEEDER_NAMES, load_pandapower_net
from capacity.grid import Feeder
from capacity.helm import solve
from capacity.loading import downstream_buses
from tests.capacity.conftest import build_mixed_network

SCALES = (0.3, 1.0, 2.5)
TOL_PCT = 1e-4  # percentage points


def _kerber(build):
    def make():
        random.seed(0)  # the Kerber builders draw cable types at random
        np.random.seed(0)
        return build()

    return make


NETWORKS = {
    "cigre-lv (3 trafos, 30 deg)": pn.create_cigre_network_lv,
    "kerber-dorfnetz": _kerber(pn.create_kerber_dorfnetz),
    "kerber-landnetz-kabel-2": _kerber(pn.create_kerber_landnetz_kabel_2),
    "four-load-branch": pn.panda_four_load_branch,
    "mixed (Dyn5 tapped x2, parallel lines)": build_mixed_network,
    "mixed, lv symmetrical tap": lambda: build_mixed_network("lv", "Symmetrical", 5.0),
    **{f"built-in {name}": (lambda name=name: load_pandapower_net(name)) for name in FEEDER_NAMES},
}


def runpp_loadings(net, feeder: Feeder) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-11, max_iteration=50, numba=False)
    return (net.res_line.loading_percent.loc[feeder.line_ids].to_numpy(),
            net.res_trafo.loading_percent.loc[feeder.trafo_ids].to_numpy())


@pytest.mark.parametrize("name", list(NETWORKS))
def test_loading_equals_pandapowers_at_several_load_levels(name) -> None:
    net = NETWORKS[name]()
    feeder = Feeder.from_pandapower(net)
    scales = np.array(SCALES)
    result = solve(feeder, np.outer(scales, feeder.p_kw), np.outer(scales, feeder.q_kvar))
    assert result.converged.all()
    assert result.line_loading_pct.shape == (len(SCALES), len(feeder.line_ids))
    assert result.trafo_loading_pct.shape == (len(SCALES), len(feeder.trafo_ids))
    for i, scale in enumerate(SCALES):
        scaled = copy.deepcopy(net)
        for table in ("load", "sgen", "storage"):
            scaled[table]["scaling"] *= scale
        line_ref, trafo_ref = runpp_loadings(scaled, feeder)
        np.testing.assert_allclose(result.line_loading_pct[i], line_ref, rtol=0, atol=TOL_PCT)
        np.testing.assert_allclose(result.trafo_loading_pct[i], trafo_ref, rtol=0, atol=TOL_PCT)
    assert np.nanmax(result.branch_loading_pct[-1]) > 10.0  # the comparison is not all zeros


def test_single_solve_loading_equals_the_batch() -> None:
    feeder = Feeder.from_pandapower(pn.create_cigre_network_lv())
    batch = solve(feeder, np.outer([0.5, 1.5], feeder.p_kw), np.outer([0.5, 1.5], feeder.q_kvar))
    single = solve(feeder, 1.5 * feeder.p_kw, 1.5 * feeder.q_kvar)
    np.testing.assert_allclose(single.branch_loading_pct[0], batch.branch_loading_pct[1],
                               rtol=1e-9)


def test_ids_are_pandapowers_indices_and_open_ended_lines_are_not_branches() -> None:
    net = build_mixed_network()
    feeder = Feeder.from_pandapower(net)
    open_ended = set(net.switch.element[(net.switch.et == "l") & ~net.switch.closed])
    assert feeder.line_ids.tolist() == [i for i in net.line.index if i not in open_ended]
    assert feeder.trafo_ids.tolist() == net.trafo.index.tolist()
    ampacity = (net.line.max_i_ka * net.line.df * net.line.parallel).loc[feeder.line_ids]
    np.testing.assert_allclose(feeder.lines.ampacity_ka, ampacity.to_numpy())
    np.testing.assert_array_equal(feeder.trafos.sn_mva, net.trafo.sn_mva.to_numpy())


def test_derating_and_unrated_lines() -> None:
    net = build_mixed_network()
    net.line.loc[0, "df"] = 0.5
    net.trafo.loc[0, "df"] = 0.8
    feeder = Feeder.from_pandapower(net)
    line_ref, trafo_ref = runpp_loadings(net, feeder)
    res = solve(feeder)
    np.testing.assert_allclose(res.line_loading_pct[0], line_ref, atol=TOL_PCT)
    np.testing.assert_allclose(res.trafo_loading_pct[0], trafo_ref, atol=TOL_PCT)
    net.line.loc[1, "max_i_ka"] = np.nan  # unrated: no loading, as pandapower
    unrated = solve(Feeder.from_pandapower(net))
    assert np.isnan(unrated.line_loading_pct[0, 1])
    assert np.isfinite(np.delete(unrated.line_loading_pct[0], 1)).all()


def test_no_solution_gives_nan_loading() -> None:
    feeder = Feeder.from_pandapower(pn.create_cigre_network_lv())
    res = solve(feeder, np.outer([1.0, 60.0], feeder.p_kw), np.outer([1.0, 60.0], feeder.q_kvar))
    assert res.converged.tolist() == [True, False]
    assert np.isfinite(res.branch_loading_pct[0]).all()
    assert np.isnan(res.branch_loading_pct[1]).all()


def test_downstream_buses_on_a_radial_and_a_meshed_feeder() -> None:
    net = load_pandapower_net("paper-test-feeder")  # Bus00 - Bus01 - ... - Bus04
    feeder = Feeder.from_pandapower(net)
    beyond = downstream_buses(feeder)
    expected = np.array([[b > k for b in range(5)] for k in range(4)])
    np.testing.assert_array_equal(beyond, expected)
    pp.create_line(net, 0, 4, 0.5, "NAYY 4x150 SE")  # closes a ring
    assert downstream_buses(Feeder.from_pandapower(net)) is None
