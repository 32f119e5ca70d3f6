"""A fleet task computes the oracle's bands, whatever the process computed before."""

from __future__ import annotations

import pickle

import numpy as np

from capacity.feeders import day_profiles, load_feeder
from capacity.ocm import GaSettings, compute_bands
from gridshare.fleet.compute import INTERVAL_S, feeder_hour, hour_intervals
from gridshare.fleet.model import make_model
from gridshare.fleet.sources import FeederSource, build_model
from gridshare.units import kw_to_w, w_to_kw
from oracle.forecast import intersect_bands
from oracle.service import interval_seed
from tests.fleet.conftest import FAST, HOUR


def test_fleet_bands_are_compute_bands_on_the_interval_profile_with_the_oracle_settings(
) -> None:
    # an independent call on the feeder built from pandapower (the model's travels as a feeder
    # file): the interval's last minute (FAST uses the oracle's "last" step) in integer W as the
    # oracle sees it, every OcmSettings value passed by hand, compute_bands' other defaults
    feeder = load_feeder("heimschuh-like")
    model = make_model("heimschuh-like", feeder, day_profiles("heimschuh-like"))
    hour = feeder_hour(model, HOUR, FAST)
    flexes = feeder.flexibilities
    for k, interval in enumerate(hour_intervals(model, HOUR)):
        minute = HOUR * 60 + 15 * k + 14
        result = compute_bands(
            feeder, flexes, w_to_kw(model.forecast.p_w[[minute]]),
            w_to_kw(model.forecast.q_var[[minute]]), v_slack_pu=feeder.slack.vm_pu,
            v_low=FAST.v_low_pu, v_high=FAST.v_high_pu, objective=FAST.objective,
            seed=interval_seed(FAST.seed, int(interval)), n_random=FAST.n_random,
            ga=GaSettings(population=FAST.ga_population,
                          max_generations=FAST.ga_max_generations),
            margin_pu=FAST.margin_pu)
        lo, hi, _ = intersect_bands(result.p_min_kw, result.p_max_kw)
        got = hour.intervals[k]
        assert got.interval * INTERVAL_S == model.forecast.day_start_s + (minute - 14) * 60
        assert got.p_min_w == tuple(int(w) for w in kw_to_w(lo))
        assert got.p_max_w == tuple(int(w) for w in kw_to_w(hi))
    assert {iv.upper for iv in hour.intervals} == {"v_low"}  # the evening binds at 0.95 pu
    assert all(abs(iv.v_min_at_max_pu - FAST.v_low_pu) < 1e-4 for iv in hour.intervals)


def test_an_hour_does_not_depend_on_what_the_process_computed_before() -> None:
    # a worker keeps the model (and HELM's cache in it) across tasks; a fresh copy must agree
    model = build_model(FeederSource("cigre-lv-00002", index=2), seed=0)
    first = feeder_hour(model, HOUR, FAST)
    fresh = pickle.loads(pickle.dumps(model))
    feeder_hour(fresh, HOUR - 6, FAST)
    assert feeder_hour(fresh, HOUR, FAST).intervals == first.intervals


def test_thermal_limits_apply_by_default() -> None:
    # compute_bands keeps lines and transformers within 100 % unless told otherwise; the fleet
    # passes nothing, so a cigre-lv variant's evening band is limited by a cable
    model = build_model(FeederSource("cigre-lv-00002", index=2), seed=0)
    limits = {iv.upper for iv in feeder_hour(model, HOUR, FAST).intervals}
    assert any(limit.startswith("line ") for limit in limits), limits


def test_a_used_model_travels_without_the_helm_cache() -> None:
    model = build_model(FeederSource("paper-test-feeder-00000", index=0), seed=0)
    feeder_hour(model, HOUR, FAST)
    assert "helm" in model.feeder._cache  # the cache that cannot be pickled ...
    copy = pickle.loads(pickle.dumps(model))  # ... stays behind
    assert copy.feeder is not model.feeder
    assert np.array_equal(copy.forecast.p_w, model.forecast.p_w)
    assert copy.feeder.flexibilities == model.feeder.flexibilities
