"""OCM with thermal limits: a transformer and a cable that bind before any voltage does.

On the feeders of ``thermal_nets`` the bands must stop at the binding branch (checked with
pandapower's Newton-Raphson at every corner of the box and at random points inside it: every
loading <= 100 % and every voltage inside 0.95..1.05 pu) and must not be needlessly narrow (the
binding branch is at its limit, or the devices at their rating).
"""

from __future__ import annotations

import numpy as np
import pytest

from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.grid import Feeder
from capacity.nr_check import NewtonRaphson
from capacity.ocm import BandResult, compute_bands
from capacity.ocm.certify import box_points
from capacity.ocm.core import thermal_corner_masks
from capacity.ocm.result import RATING
from tests.capacity.thermal_nets import FLEXIBILITIES, K1, K2, base_step, build_thermal_net

V_SLACK = 1.02
PV_KW = {"trafo": (0.0, 100.0), "cable": (0.0, 40.0)}
"""Per case: a step where importing binds (P_max), one where exporting binds (P_min)."""
BINDS = {"trafo": "trafo 0", "cable": "line 2"}
LOADING_TOL_PCT = 1e-4


def _inputs(case: str):
    net = build_thermal_net(case)
    feeder = Feeder.from_pandapower(net)
    steps = [base_step(net, feeder.bus_ids, pv) for pv in PV_KW[case]]
    return net, feeder, np.array([s[0] for s in steps]), np.array([s[1] for s in steps])


@pytest.fixture(scope="module", params=["trafo", "cable"])
def thermal(request):
    case = request.param
    net, feeder, p, q = _inputs(case)
    res = compute_bands(feeder, FLEXIBILITIES, p, q, v_slack_pu=V_SLACK, n_random=300)
    return case, net, feeder, p, q, res


def _nr_points(net, feeder, p, q, lo, hi, n_random, seed):
    """NR (pandapower runpp) at every corner of [lo, hi] and n_random points inside it."""
    inc = np.zeros((len(FLEXIBILITIES), feeder.n_bus))
    for i, f in enumerate(FLEXIBILITIES):
        inc[i, feeder.bus_position(f.bus_id)] = 1.0
    corners, inside = box_points(lo, hi, n_random, np.random.default_rng(seed))
    pts = np.vstack([corners, inside])
    res = NewtonRaphson(feeder, net).run(p + pts @ inc, np.broadcast_to(q, (len(pts), q.size)),
                                         V_SLACK)
    assert res.converged.all()
    return res, corners.shape[0]


def test_the_branch_binds_before_any_voltage(thermal) -> None:
    case, *_, res = thermal
    assert res.feasible.all() and not res.shrinks.any()
    assert res.binding_max[0] == BINDS[case]  # importing: the stations and the battery
    assert res.binding_min[1] == BINDS[case]  # exporting: the battery and the PV
    assert res.binding_min[0] == RATING and res.binding_max[1] == RATING
    assert np.all(res.v_min_at_max_pu > 0.96) and np.all(res.v_max_at_min_pu < 1.045)


def test_the_bands_are_safe_under_newton_raphson(thermal) -> None:
    case, net, feeder, p, q, res = thermal
    for t in range(res.n_steps):
        nr, n_corners = _nr_points(net, feeder, p[t], q[t], res.p_min_kw[t], res.p_max_kw[t],
                                   200, seed=t)
        assert np.nanmax(nr.branch_loading_pct) <= 100.0 + LOADING_TOL_PCT
        assert nr.vm_pu.min() >= 0.95 and nr.vm_pu.max() <= 1.05
        # not needlessly narrow: the binding branch reaches its limit at some corner
        j = (["line 0", "line 1", "line 2", "trafo 0"]).index(BINDS[case])
        assert nr.branch_loading_pct[:n_corners, j].max() >= 99.9


def test_without_thermal_limits_the_same_box_would_overload(thermal) -> None:
    _, net, feeder, p, q, res = thermal
    free = compute_bands(feeder, FLEXIBILITIES, p, q, v_slack_pu=V_SLACK, n_random=50,
                         max_line_loading_pct=np.inf, max_trafo_loading_pct=np.inf)
    assert free.feasible.all()
    assert free.p_max_kw[0].sum() > res.p_max_kw[0].sum() + 5.0
    assert free.p_min_kw[1].sum() < res.p_min_kw[1].sum() - 5.0
    nr, _ = _nr_points(net, feeder, p[0], q[0], free.p_min_kw[0], free.p_max_kw[0], 0, seed=0)
    assert np.nanmax(nr.branch_loading_pct) > 105.0


def test_the_cables_reverse_current_is_checked_at_the_mixed_corner() -> None:
    """Exporting through the service cable, CS01 upstream at full power lowers the cable's
    voltage, so its current is highest at a mixed corner, not at the all-min corner."""
    net, feeder, p, q = _inputs("cable")
    res = compute_bands(feeder, FLEXIBILITIES, p[1:], q[1:], v_slack_pu=V_SLACK, n_random=100)
    assert res.notes[0] == "thermal-corners"
    nr, n_corners = _nr_points(net, feeder, p[1], q[1], res.p_min_kw[0], res.p_max_kw[0], 0, 0)
    service = nr.line_loading_pct[:n_corners, 2]
    mixed = int(np.argmax(service))
    assert mixed not in (0, 1)  # neither the all-min nor the all-max corner
    assert 99.9 <= service[mixed] <= 100.0 + LOADING_TOL_PCT
    assert service[0] < service[mixed] - 0.05


def test_reduced_limits_and_errors() -> None:
    _, feeder, p, q = _inputs("trafo")
    res = compute_bands(feeder, FLEXIBILITIES, p[:1], q[:1], v_slack_pu=V_SLACK, n_random=50,
                        max_trafo_loading_pct=80.0)
    assert res.binding_max[0] == "trafo 0"
    assert 79.9 <= res.trafo_loading_at_max_pct[0, 0] <= 80.0
    assert res.meta["max_trafo_loading_pct"] == 80.0
    np.testing.assert_array_equal(res.line_ids, feeder.line_ids)
    for bad in (0.0, -5.0, np.nan):
        with pytest.raises(ValueError, match="max_line_loading_pct"):
            compute_bands(feeder, FLEXIBILITIES, p[:1], q[:1], max_line_loading_pct=bad)

    def voltages_only(p_kw, q_kvar, v_slack_pu):
        return np.ones(p_kw.shape), np.ones(p_kw.shape[0], dtype=bool)

    with pytest.raises(ValueError, match="branch loadings"):
        compute_bands(feeder, FLEXIBILITIES, p[:1], q[:1], solver=voltages_only, n_random=5)


def test_corners_that_matter_for_many_devices() -> None:
    """Beyond six devices not every corner is checked: per limited branch of a radial feeder,
    the corner with the devices beyond it low and the others high."""
    _, feeder, p, q = _inputs("cable")
    extra = tuple(Flexibility(f"CS1{i}", b, 0.0, 11.0, FlexibilityKind.CHARGING_STATION)
                  for i, b in enumerate((K1, K1, K2, K2)))
    flex = FLEXIBILITIES + extra
    inc = np.zeros((len(flex), feeder.n_bus))
    for i, f in enumerate(flex):
        inc[i, feeder.bus_position(f.bus_id)] = 1.0
    limits = np.full(len(feeder.line_ids) + len(feeder.trafo_ids), 100.0)
    masks = thermal_corner_masks(feeder, inc, limits)
    beyond_service = [f.name in ("CS02", "CB") for f in flex]
    beyond_k1 = [f.name != "CS01" and f.name not in ("CS10", "CS11") for f in flex]
    assert sorted(map(tuple, masks.tolist())) == sorted([tuple(beyond_service), tuple(beyond_k1)])
    res = compute_bands(feeder, flex, p[1:], q[1:], v_slack_pu=V_SLACK, n_random=50)
    assert res.feasible[0] and res.certified_points[0] == 2 + len(masks) + 50
    assert np.nanmax(res.loading_box_max_pct) <= 100.0


def test_band_results_built_without_the_thermal_fields_still_work() -> None:
    """Callers that assemble a BandResult from the voltage fields alone (older code)."""
    z = np.zeros((1, 2))
    res = BandResult(flexibilities=FLEXIBILITIES[:2], objective="sum", v_low_pu=0.95,
                     v_high_pu=1.05, p_min_kw=z, p_max_kw=z, feasible=np.ones(1, bool),
                     violation_pu=np.zeros(1), v_at_min_pu=np.ones((1, 3)),
                     v_at_max_pu=np.ones((1, 3)), v_random_stats_pu=np.ones((1, 5)),
                     argmin_kw=z, argmax_kw=z, certified_points=np.ones(1, int),
                     shrinks=np.zeros(1, int), notes=[""], n_evaluations=np.ones(1, int),
                     seconds=np.zeros(1))
    assert res.line_loading_at_max_pct.shape == (0, 0) and res.binding_max == []
