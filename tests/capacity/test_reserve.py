"""The battery power the grid allows at v_low (capacity.reserve)."""

from __future__ import annotations

import numpy as np
import pytest

from capacity.feeders import day_profiles, feeder_case, load_feeder
from capacity.helm import solve
from capacity.reserve import BISECTION_STEPS, highest_power_kw, needed_discharge_kw

V_LOW = 0.95


@pytest.fixture(scope="module")
def case():
    feeder = load_feeder("heimschuh-like")
    battery = next(f for f in feeder_case("heimschuh-like").flexibilities
                   if f.kind.value == "community_battery")
    profiles = day_profiles("heimschuh-like", seed=3)
    return feeder, battery, profiles


def _v_min(feeder, p, q, col, discharge_kw):
    p = p.copy()
    p[:, col] -= discharge_kw
    return np.abs(solve(feeder, p_kw=p, q_kvar=q).v_pu).min(axis=1)


def test_the_least_discharge_lifts_every_bus_to_v_low(case) -> None:
    feeder, battery, profiles = case
    # noon (fine without the battery) and the evening minutes of the lowest voltage
    rest = np.abs(solve(feeder, p_kw=profiles.p_kw, q_kvar=profiles.q_kvar).v_pu).min(axis=1)
    minutes = np.r_[720, np.argsort(rest)[:3]]
    p, q = profiles.p_kw[minutes], profiles.q_kvar[minutes]
    assert rest[720] >= V_LOW and (rest[minutes[1:]] < V_LOW).all()
    needed = needed_discharge_kw(feeder, battery.bus_id, p, q, abs(feeder.slack.vm_pu), V_LOW,
                                 50.0)
    assert needed[0] == 0.0 and (needed[1:] > 0).all() and (needed[1:] < 50).all()
    col = feeder.bus_position(battery.bus_id)
    assert (_v_min(feeder, p[1:], q[1:], col, needed[1:]) >= V_LOW).all()
    step_kw = 50.0 / 2**BISECTION_STEPS
    assert (_v_min(feeder, p[1:], q[1:], col, needed[1:] - 2 * step_kw) < V_LOW).all()


def test_more_than_the_battery_has_is_capped_at_its_rating(case) -> None:
    feeder, battery, profiles = case
    p = profiles.p_kw[[1100]] * 3.0
    q = profiles.q_kvar[[1100]] * 3.0
    assert needed_discharge_kw(feeder, battery.bus_id, p, q, abs(feeder.slack.vm_pu), V_LOW,
                               5.0).tolist() == [5.0]


def test_bad_shapes_and_ratings_are_refused(case) -> None:
    feeder, battery, profiles = case
    with pytest.raises(ValueError, match=r"must be \(S"):
        needed_discharge_kw(feeder, battery.bus_id, profiles.p_kw[:2], profiles.q_kvar[:3],
                            1.0, V_LOW, 50.0)
    with pytest.raises(ValueError, match="p_max_kw"):
        needed_discharge_kw(feeder, battery.bus_id, profiles.p_kw[:2], profiles.q_kvar[:2],
                            1.0, V_LOW, 0.0)


def test_the_highest_power_in_a_band_follows_the_feeder(case) -> None:
    """Per scenario its own range: the top where it holds, the bisected power at v_low inside
    it, the range's bottom where even that does not hold."""
    feeder, battery, profiles = case
    rest = np.abs(solve(feeder, p_kw=profiles.p_kw, q_kvar=profiles.q_kvar).v_pu).min(axis=1)
    low = int(np.argmin(rest))
    p, q = profiles.p_kw[[720, low, low]], profiles.q_kvar[[720, low, low]]
    v_slack = abs(feeder.slack.vm_pu)
    need = float(needed_discharge_kw(feeder, battery.bus_id, p[1:2], q[1:2], v_slack, V_LOW,
                                     50.0)[0])
    lo, hi = np.array([-10.0, -50.0, -need / 2]), np.array([8.0, 5.0, 3.0])
    got = highest_power_kw(feeder, battery.bus_id, p, q, v_slack, V_LOW, lo, hi)
    step_kw = 55.0 / 2**BISECTION_STEPS
    assert got[0] == 8.0
    assert abs(got[1] + need) <= 2 * step_kw
    assert got[2] == -need / 2
    col = feeder.bus_position(battery.bus_id)
    assert _v_min(feeder, p[1:2], q[1:2], col, -got[1:2])[0] >= V_LOW


def test_a_range_upside_down_is_refused(case) -> None:
    feeder, battery, profiles = case
    with pytest.raises(ValueError, match="lo_kw <= hi_kw"):
        highest_power_kw(feeder, battery.bus_id, profiles.p_kw[:2], profiles.q_kvar[:2], 1.0,
                         V_LOW, np.array([0.0, 2.0]), 1.0)
