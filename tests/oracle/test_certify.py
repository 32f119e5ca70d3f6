"""The Newton-Raphson check of a band (``oracle.certify``): passes, narrows, refuses; counts;
reproducible from the canonical inputs."""

from __future__ import annotations

import numpy as np
import pytest

from capacity.feeders import feeder_case, load_feeder
from oracle.certify import NrSettings, certify, nr_settings_of
from oracle.service import OcmSettings, compute_from_inputs, ocm_inputs

FEEDER = "heimschuh-like"


@pytest.fixture(scope="module")
def feeder():
    return load_feeder(FEEDER)


DEFAULT_NR = NrSettings()


def inputs_of(feeder, v_slack_micro_pu: list[int], nr: NrSettings | None = DEFAULT_NR) -> dict:
    """Canonical inputs of an unloaded feeder at the given slack voltages (one step each)."""
    devices = [[k + 1, f.bus_id, int(f.p_low_kw * 1000), int(f.p_high_kw * 1000),
                f.kind.value] for k, f in enumerate(feeder_case(FEEDER).flexibilities)]
    n = len(v_slack_micro_pu)
    out = {"feeder": FEEDER, "bus_ids": [int(b) for b in feeder.bus_ids],
           "steps_unix_s": [60 * k for k in range(n)],
           "p_w": [[0] * feeder.n_bus] * n, "q_var": [[0] * feeder.n_bus] * n,
           "v_slack_micro_pu": v_slack_micro_pu, "devices": devices,
           "ocm": ocm_inputs(OcmSettings(forecast="last", n_random=30, ga_population=8,
                                         ga_max_generations=8), 7)}
    if nr is not None:
        out["nr"] = nr.as_inputs()
    return out


RATED = ([-50_000, 0, 0], [50_000, 22_000, 22_000])


def test_a_safe_band_passes_unchanged(feeder) -> None:
    check = certify(inputs_of(feeder, [1_000_000]), [-10_000, 0, 0], [10_000, 5_000, 5_000],
                    NrSettings(n_random=2))
    assert check.certified and check.narrowed == 0 and check.failed == 0
    assert (check.p_min_w, check.p_max_w, check.points) == ([-10_000, 0, 0],
                                                            [10_000, 5_000, 5_000], 4)


def test_a_failing_band_is_narrowed_towards_idle(feeder) -> None:
    """The whole rated range at 1.0 pu: all stations and the battery at full load pull the far
    end to 0.88 pu, half of it to 0.944 pu: a quarter passes."""
    inputs = inputs_of(feeder, [1_000_000])
    check = certify(inputs, *RATED, NrSettings(n_random=2))
    assert check.certified and check.narrowed == 2 and check.failed >= 2
    assert (check.p_min_w, check.p_max_w) == ([-12_500, 0, 0], [12_500, 5_500, 5_500])
    assert check.points == 3 * 4
    assert certify(inputs, *RATED, NrSettings(n_random=2)) == check  # reproducible


def test_a_band_without_a_safe_point_is_not_certified(feeder) -> None:
    """Step 0 is fine, step 1's slack at 0.9 pu leaves every bus below 0.95 pu even idle: every
    round runs step 0's points and stops at step 1's; nothing is certified."""
    check = certify(inputs_of(feeder, [1_000_000, 900_000]), [-1_000, 0, 0], [1_000, 0, 0],
                    NrSettings(n_random=1, max_narrowing=2))
    assert not check.certified and check.p_min_w is None and check.narrowed == 2
    assert check.points == 3 * 2 * 3 and check.failed == 3 * 3


def test_settings_round_trip_through_the_inputs(feeder) -> None:
    settings = NrSettings(n_random=3, tolerance_pu=2e-4, max_narrowing=1)
    assert nr_settings_of(inputs_of(feeder, [1_000_000], settings)) == settings
    assert nr_settings_of(inputs_of(feeder, [1_000_000], None)) is None
    with pytest.raises(ValueError, match=">= 0"):
        NrSettings(n_random=-1)


def test_compute_from_inputs_checks_only_inputs_that_ask_for_it(feeder) -> None:
    without = compute_from_inputs(feeder, inputs_of(feeder, [1_010_000], None))
    assert "nr" not in without  # e.g. gridshare fleet's inputs
    checked = compute_from_inputs(feeder, inputs_of(feeder, [1_010_000]))
    nr = checked["nr"]
    assert nr.certified and nr.points >= 4
    assert (checked["p_min_w"], checked["p_max_w"]) == (nr.p_min_w, nr.p_max_w)
    if nr.narrowed == 0:
        assert (nr.p_min_w, nr.p_max_w) == (without["p_min_w"], without["p_max_w"])
    assert np.all(np.array(nr.p_min_w) <= np.array(nr.p_max_w))


def _peak_loading_pct(feeder, flex_w: list[int]) -> float:
    """Highest branch loading (pandapower NR) of the unloaded feeder at 1.0 pu with the
    flexibilities at ``flex_w`` (W)."""
    from oracle.certify import newton_raphson

    p_kw = np.zeros(feeder.n_bus)
    for f, w in zip(feeder_case(FEEDER).flexibilities, flex_w, strict=True):
        p_kw[feeder.bus_position(f.bus_id)] += w / 1000
    res = newton_raphson(FEEDER).run(p_kw, np.zeros(feeder.n_bus), 1.0)
    return float(np.nanmax(res.branch_loading_pct))


def test_a_band_that_overloads_a_branch_is_narrowed(feeder) -> None:
    """Voltages allow the band (it passes unchanged without a loading limit); with a line limit
    between the idle and the full-band loading, the check narrows it until every corner is
    within the limit."""
    lo, hi = [-10_000, 0, 0], [10_000, 5_000, 5_000]
    idle_pct, full_pct = _peak_loading_pct(feeder, [0, 0, 0]), _peak_loading_pct(feeder, hi)
    assert full_pct > idle_pct + 1.0
    limit_pct = (idle_pct + full_pct) / 2
    inputs = inputs_of(feeder, [1_000_000])
    inputs["ocm"]["max_line_loading_milli_pct"] = round(limit_pct * 1000)
    check = certify(inputs, lo, hi, NrSettings(n_random=2))
    assert check.certified and check.narrowed >= 1 and check.failed >= 1
    for corner in (check.p_min_w, check.p_max_w):
        assert _peak_loading_pct(feeder, corner) <= limit_pct + DEFAULT_NR.tolerance_loading_pct


def test_loading_limits_reach_the_inputs_and_old_inputs_keep_none(feeder) -> None:
    from oracle.certify import loading_limits_pct

    ocm = ocm_inputs(OcmSettings(max_line_loading_pct=80.0), 1)
    assert (ocm["max_line_loading_milli_pct"], ocm["max_trafo_loading_milli_pct"]) == (80_000,
                                                                                      100_000)
    assert loading_limits_pct(ocm) == (80.0, 100.0)
    assert ocm_inputs(OcmSettings(max_trafo_loading_pct=np.inf), 1)[
        "max_trafo_loading_milli_pct"] is None
    old = {k: v for k, v in ocm.items() if "loading" not in k}  # written before thermal limits
    assert loading_limits_pct(old) == (np.inf, np.inf)
    with pytest.raises(ValueError, match="loading"):
        OcmSettings(max_line_loading_pct=0.0)
