"""A community battery that follows the feeder (``OcmSettings.battery_follows``): its band is
certified step by step, forces only what the grid needs now, and its reserve is written on
chain with the bands for the market to keep (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from capacity.reserve import highest_power_kw
from market.chain import MarketChain, default_battery_params
from oracle.audit import CapacityAudit
from oracle.battery import needed_discharge_profile_kw
from oracle.certify import certify, nr_settings_of
from oracle.service import compute_from_inputs
from oracle.state import feeder_model
from tests.oracle.oracle_helpers import audit_stale


def _battery_col(inputs) -> int:
    return next(k for k, d in enumerate(inputs["devices"]) if d[4] == "community_battery")


def _with_ramp(inputs, factor: float):
    """``inputs`` with a step before the last minute: every bus's load ``factor`` times it."""
    p, q = np.asarray(inputs["p_w"]), np.asarray(inputs["q_var"])
    return {**inputs, "steps_unix_s": [inputs["steps_unix_s"][-1] - 60,
                                       *inputs["steps_unix_s"]],
            "p_w": [[int(x * factor) if x > 0 else int(x) for x in p[-1]], *p.tolist()],
            "q_var": [q[-1].tolist(), *q.tolist()],
            "v_slack_micro_pu": [inputs["v_slack_micro_pu"][-1], *inputs["v_slack_micro_pu"]]}


@pytest.fixture(scope="module")
def ramp(evening):
    """The evening interval's inputs with a 15 % load ramp step, as a box and as a follower."""
    _, oracle, _, target = evening
    inputs = _with_ramp(oracle.store.interval(target).inputs, 1.15)
    box = compute_from_inputs(oracle.feeder, inputs)
    follows = {**inputs, "ocm": {**inputs["ocm"], "battery_follows": True}}
    return oracle, follows, box, compute_from_inputs(oracle.feeder, follows)


def test_a_follower_forces_only_what_the_grid_needs_now(ramp) -> None:
    oracle, inputs, box, follow = ramp
    k = _battery_col(inputs)
    step_max = follow["battery_step_max_w"]
    assert len(step_max) == 2 and step_max[0] < step_max[1]  # the ramp step needs more
    assert follow["p_max_w"][k] > box["p_max_w"][k]  # the box forces the ramp's all interval
    # what keeps v_low at the newest minute with the others at rest
    v_low = inputs["ocm"]["v_low_micro_pu"] / 1e6 + inputs["ocm"]["margin_nano_pu"] / 1e9
    now = highest_power_kw(oracle.feeder, inputs["devices"][k][1],
                           np.asarray(inputs["p_w"][-1:]) / 1e3,
                           np.asarray(inputs["q_var"][-1:]) / 1e3,
                           inputs["v_slack_micro_pu"][-1] / 1e6, v_low,
                           follow["p_min_w"][k] / 1e3, inputs["devices"][k][3] / 1e3)
    assert abs(follow["p_max_w"][k] - max(box["p_max_w"][k], now[0] * 1e3)) <= 1.0
    others = [i for i in range(len(inputs["devices"])) if i != k]
    assert [follow["p_max_w"][i] for i in others] == [box["p_max_w"][i] for i in others]
    assert [follow["p_min_w"][i] for i in others] == [box["p_min_w"][i] for i in others]


def test_the_follower_is_certified_step_by_step_and_a_box_would_fail(ramp) -> None:
    _, inputs, _, follow = ramp
    assert follow["nr"].certified and follow["nr"].failed == 0
    # the same band read as a box (the battery at its P_max at the ramp step) breaks v_low
    as_box = certify(inputs, follow["p_min_w"], follow["p_max_w"], nr_settings_of(inputs))
    assert as_box.failed > 0


def test_without_a_ramp_the_follower_band_is_the_box(evening) -> None:
    _, oracle, _, target = evening
    inputs = oracle.store.interval(target).inputs
    follow = compute_from_inputs(oracle.feeder, {**inputs, "ocm": {**inputs["ocm"],
                                                                   "battery_follows": True}})
    box = compute_from_inputs(oracle.feeder, inputs)
    k = _battery_col(inputs)
    assert follow["battery_step_max_w"] == [box["p_max_w"][k]]
    assert follow["p_min_w"] == box["p_min_w"]
    assert follow["p_max_w"][k] >= box["p_max_w"][k]


def test_the_reserve_is_written_with_the_bands_and_the_market_reads_it(evening) -> None:
    d, oracle, _, target = evening
    reserve = oracle.store.interval(target).inputs["battery"]["reserve_wh"]
    market = MarketChain(d.chain, d.deployment, default_battery_params(d.deployment))
    assert market.reserve_wh(target) == reserve > 0
    assert market.reserve_wh(target + 50) is None  # nothing written there


def test_a_reserve_other_than_the_inputs_makes_the_band_stale(evening) -> None:
    d, _, ocm, target = evening
    assert audit_stale(d, ocm, target) == [False] * len(d.deployment.devices)
    view = CapacityAudit.for_deployment(d.chain, d.deployment, d.deployment.capacity(d.chain),
                                        None)
    stale, reason = view._reserve_mismatch(target, {"reserve_wh": 1})
    assert stale and "battery reserve" in reason
    assert view._reserve_mismatch(target + 50, None) == (False, None)
    assert view._reserve_mismatch(target + 50, {"reserve_wh": 5})[0]


def test_a_follower_needs_the_mean_of_its_minutes_not_the_worst_minute() -> None:
    feeder = feeder_model("heimschuh-like")
    bus = next(f.bus_id for f in feeder.flexibilities if f.kind.value == "community_battery")
    args = ("heimschuh-like", 1, 3, bus, 50_000, 950_000, 900)
    worst = needed_discharge_profile_kw(*args)
    follows = needed_discharge_profile_kw(*args, follows=True)
    assert worst.shape == follows.shape == (3, 96)
    assert np.all(follows <= worst + 1e-6) and 0 < follows.sum() < 0.9 * worst.sum()
