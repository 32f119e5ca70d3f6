"""The product band policy (issue 16, ``capacity.ocm.policy``): no forced station, a guaranteed
minimum, a fair share, then efficiency; chargers' operating sets; hostile settings."""

from __future__ import annotations

import numpy as np
import pytest

from capacity.feeders import day_profiles, feeder_case, load_feeder, load_pandapower_net
from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.nr_check import NewtonRaphson
from capacity.ocm import BandPolicy, compute_bands
from capacity.ocm.ga import GaSettings, run_ga
from capacity.ocm.policy import snap_to_operating_set
from tests.capacity.test_ocm_paper import nr_safety_check

HOURLY = np.arange(0, 1440, 60)
ON_KW = 4.14
GUARANTEE_KW = 4.2


def _case(name: str):
    feeder, case, prof = load_feeder(name), feeder_case(name), day_profiles(name, seed=0)
    station = np.array([f.kind == FlexibilityKind.CHARGING_STATION for f in case.flexibilities])
    return feeder, case, prof, station


def _bands(name: str, minutes: np.ndarray, **kw):
    feeder, case, prof, _ = _case(name)
    return compute_bands(feeder, case.flexibilities, prof.p_kw[minutes], prof.q_kvar[minutes],
                         v_slack_pu=case.v_slack_pu, seed=0, n_random=200, **kw)


@pytest.fixture(scope="module")
def heimschuh():
    """heimschuh-like (CB, CS01, CS02) every hour: the paper's sum and the policy."""
    paper = _bands("heimschuh-like", HOURLY)
    policy = _bands("heimschuh-like", HOURLY, objective="fair", policy=BandPolicy())
    return paper, policy, _case("heimschuh-like")[3]


def test_the_paper_sum_forces_a_station_on_and_the_policy_never_does(heimschuh):
    paper, policy, station = heimschuh
    # the point bands: forcing CS02 up lets the battery inject more at midday
    assert (paper.p_min_kw[:, station] > 1.0).any()
    assert policy.feasible.all()
    assert np.all(policy.p_min_kw[:, station] == 0.0)


def test_every_station_gets_its_guarantee_when_the_grid_allows_it(heimschuh):
    paper, policy, station = heimschuh
    assert not any("partial" in n for n in policy.notes)
    assert np.all(policy.p_max_kw[:, station] >= GUARANTEE_KW - 1e-9)
    # where the paper's sum leaves the far station nothing (the evening)
    starved = paper.p_max_kw[:, station].min(axis=1) < GUARANTEE_KW
    assert starved.sum() >= 3


def test_capacity_from_rest_is_shared_equally_and_the_battery_is_not_forced(heimschuh):
    _, policy, station = heimschuh
    from_rest = np.array([n == "policy" for n in policy.notes])
    limited = from_rest & (policy.p_max_kw[:, station].max(axis=1) < 22.0 - 1e-6)
    assert limited.sum() >= 10
    cs = policy.p_max_kw[limited][:, station]
    assert np.abs(cs[:, 0] - cs[:, 1]).max() <= 0.1  # equal ratings: equal kW
    battery = ~station
    assert np.all(policy.p_max_kw[from_rest][:, battery] >= 0.0)
    assert np.all(policy.p_min_kw[from_rest][:, battery] <= 0.0)
    # the battery's charging gets the same fraction of its headroom as the stations (max-min)
    cb_fraction = policy.p_max_kw[limited][:, 0] / 50.0
    cs_fraction = (cs.min(axis=1) - GUARANTEE_KW) / (22.0 - GUARANTEE_KW)
    assert np.all(cb_fraction >= cs_fraction - 0.01)


def test_the_battery_discharges_only_as_far_as_the_guarantees_need(heimschuh):
    _, policy, station = heimschuh
    moved = np.array([("battery-for-guarantee" in n or "forced" in n) for n in policy.notes])
    assert moved.sum() >= 2
    assert np.all(policy.p_max_kw[moved][:, ~station] < 0.0)
    # the stations stay at their guarantee there: nothing beyond it is paid by a discharge
    assert np.allclose(policy.p_max_kw[moved][:, station], GUARANTEE_KW, atol=1e-6)


def test_a_battery_that_shares_funds_the_stations_above_their_guarantee(heimschuh):
    """Where the guarantee needs the battery's discharge, ``battery_shares`` gives the stations
    the fair share the battery's most discharge allows (above the guarantee), and the band at
    those steps stays safe (its all-max corner is the argmax, a feasible point)."""
    _, policy, station = heimschuh
    moved = [k for k, n in enumerate(policy.notes) if "battery-for-guarantee" in n]
    assert moved
    shared = _bands("heimschuh-like", HOURLY[moved], objective="fair",
                    policy=BandPolicy(battery_shares=True))
    assert shared.feasible.all()
    assert all("battery-shares" in n for n in shared.notes)
    kept = policy.p_max_kw[moved][:, station]
    assert np.all(shared.p_max_kw[:, station] >= kept - 1e-6)
    assert np.any(shared.p_max_kw[:, station] > GUARANTEE_KW + 1.0)
    assert np.all(shared.p_min_kw[:, station] == 0.0)  # never forced on
    # more room for the stations costs the battery more discharge at the all-max corner
    assert np.all(shared.p_max_kw[:, ~station] <= policy.p_max_kw[moved][:, ~station] + 1e-6)
    feeder, case, prof, _ = _case("heimschuh-like")
    nr = NewtonRaphson(feeder, load_pandapower_net("heimschuh-like"))
    inc = np.zeros((len(case.flexibilities), feeder.n_bus))
    inc[np.arange(len(case.flexibilities)),
        feeder.bus_positions([f.bus_id for f in case.flexibilities])] = 1.0
    m = HOURLY[moved[0]]
    excess = nr_safety_check(nr, inc, prof.p_kw[m], prof.q_kvar[m], case.v_slack_pu,
                             shared.p_min_kw[0], shared.p_max_kw[0], 200,
                             np.random.default_rng(5))
    assert excess <= 1e-4


def test_a_committed_minimum_is_the_stations_p_min():
    minutes = np.array([0, 720, 1080])
    res = _bands("heimschuh-like", minutes, objective="fair",
                 policy=BandPolicy(committed_min_kw={"CS02": 7.0}))
    assert res.feasible.all()
    assert np.all(res.p_min_kw[:, 2] == 7.0) and np.all(res.p_max_kw[:, 2] >= 7.0)
    assert np.all(res.p_min_kw[:, 1] == 0.0)


def test_policy_bands_are_safe_under_newton_raphson(heimschuh):
    _, policy, _ = heimschuh
    feeder, case, prof, _ = _case("heimschuh-like")
    nr = NewtonRaphson(feeder, load_pandapower_net("heimschuh-like"))
    inc = np.zeros((len(case.flexibilities), feeder.n_bus))
    for i, f in enumerate(case.flexibilities):
        inc[i, feeder.bus_position(f.bus_id)] = 1.0
    moved = [i for i, n in enumerate(policy.notes) if n != "policy"]
    rng = np.random.default_rng(3)
    for k in (moved[0], 12):
        m = HOURLY[k]
        excess = nr_safety_check(nr, inc, prof.p_kw[m], prof.q_kvar[m], case.v_slack_pu,
                                 policy.p_min_kw[k], policy.p_max_kw[k], 300, rng)
        assert excess <= 1e-4


@pytest.fixture(scope="module")
def evening_paper_feeder():
    """paper-test-feeder's evening every 15 min: too little room for both guarantees."""
    minutes = np.arange(1020, 1320, 15)
    return minutes, _bands("paper-test-feeder", minutes, objective="fair", policy=BandPolicy())


def test_chargers_get_an_operable_p_max_or_none(evening_paper_feeder):
    minutes, res = evening_paper_feeder
    partial = np.array(["partial-guarantee" in n for n in res.notes])
    assert partial.sum() >= 4
    cs = res.p_max_kw[partial]
    assert np.all((cs == 0.0) | (cs >= ON_KW - 1e-9))
    assert np.any(cs >= ON_KW)  # somebody is served where anybody can be
    # the same steps shared continuously (no operating sets, no guarantee): dead-zone maxima
    cont = _bands("paper-test-feeder", minutes[partial], objective="fair",
                  policy=BandPolicy(guaranteed_min_kw=0.0, station_on_min_kw=0.0))
    assert np.any((cont.p_max_kw > 1e-3) & (cont.p_max_kw < ON_KW))


def test_snap_and_the_ga_stay_in_the_operating_set(evening_paper_feeder):
    x = np.array([[0.0, 1.0, 2.5, 4.14, 9.0]])
    on = np.full(5, ON_KW)
    assert snap_to_operating_set(x, on, np.full(5, 22.0)).tolist() == [
        [0.0, 0.0, ON_KW, ON_KW, 9.0]]
    feeder, case, prof, _ = _case("paper-test-feeder")
    from capacity.ocm.core import helm_voltage_solver
    from capacity.ocm.problem import StepProblem

    inc = np.zeros((2, feeder.n_bus))
    for i, f in enumerate(case.flexibilities):
        inc[i, feeder.bus_position(f.bus_id)] = 1.0
    m = int(evening_paper_feeder[0][2])
    problem = StepProblem(helm_voltage_solver(feeder), inc, prof.p_kw[m], prof.q_kvar[m],
                          case.v_slack_pu, 0.95, 1.05)
    best = run_ga(problem, 1.0, np.zeros(2), np.full(2, GUARANTEE_KW), [np.zeros(2)],
                  GaSettings(), 0, 1e-5, np.full(2, ON_KW))
    assert best.feasible
    assert np.all((best.x_kw == 0.0) | (best.x_kw >= ON_KW))


def _station(p_high_kw: float = 22.0, p_low_kw: float = 0.0) -> list[Flexibility]:
    return [Flexibility("CS01", 2, p_low_kw, p_high_kw, FlexibilityKind.CHARGING_STATION),
            Flexibility("CB", 3, -10.0, 10.0, FlexibilityKind.COMMUNITY_BATTERY)]


@pytest.mark.parametrize(("policy_kw", "flex_kw", "objective", "match"), [
    ({"guaranteed_min_kw": -1.0}, {}, "fair", "guaranteed_min_kw must be"),
    ({"guaranteed_min_kw": float("nan")}, {}, "fair", "guaranteed_min_kw must be"),
    ({"station_on_min_kw": -0.1}, {}, "fair", "station_on_min_kw must be"),
    ({"guaranteed_min_kw": 3.0}, {}, "fair", "below station_on_min_kw"),
    ({}, {"p_high_kw": 3.7}, "fair", "exceeds station 'CS01'"),
    ({"committed_min_kw": {"CS09": 5.0}}, {}, "fair", "unknown flexibilities"),
    ({"committed_min_kw": {"CB": 5.0}}, {}, "fair", "not a charging station"),
    ({"committed_min_kw": {"CS01": 2.0}}, {}, "fair", "dead zone"),
    ({"committed_min_kw": {"CS01": 30.0}}, {}, "fair", "exceeds station"),
    ({"committed_min_kw": {"CS01": -5.0}}, {}, "fair", "must be a finite number"),
    ({}, {"p_low_kw": 2.0}, "fair", "forces it on"),
    ({}, {}, "sum", "needs objective='fair'"),
])
def test_hostile_policy_settings_get_clear_errors(policy_kw, flex_kw, objective, match):
    feeder = load_feeder("paper-test-feeder")
    p = np.zeros((1, feeder.n_bus))
    with pytest.raises(ValueError, match=match):
        compute_bands(feeder, _station(**flex_kw), p, p, objective=objective,
                      policy=BandPolicy(**policy_kw))


def test_policies_hash_like_the_settings_that_hold_them():
    """The DSO audit caches its stale-band verdicts keyed by the oracle's settings: a policy
    with committed minima must hash (equal policies equally)."""
    a = BandPolicy(committed_min_kw={"CS01": 5.0, "CS02": 4.2})
    b = BandPolicy(committed_min_kw={"CS02": 4.2, "CS01": 5.0})
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert hash(a) != hash(BandPolicy())
    assert hash(BandPolicy(battery_shares=True)) != hash(BandPolicy())
