"""HELM against Newton-Raphson on the built-in feeders (capacity.feeders): scaled base case and
minutes of the day profiles (night, PV noon with reverse flow, evening peak)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandapower as pp
import pytest

from capacity.feeders import FEEDER_NAMES, apply_minute, day_profiles, load_pandapower_net
from capacity.grid import Feeder
from capacity.helm import solve

SCALES = (0.2, 1.0, 2.0, 3.0)
MINUTES = (120, 750, 1140)  # 02:00, 12:30, 19:00


def runpp_voltages(net, bus_ids: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-11, max_iteration=50, numba=False)
    res = net.res_bus.loc[bus_ids]
    return res.vm_pu.to_numpy() * np.exp(1j * np.deg2rad(res.va_degree.to_numpy()))


def assert_matches(v_helm: np.ndarray, v_nr: np.ndarray) -> None:
    assert np.max(np.abs(np.abs(v_helm) - np.abs(v_nr))) <= 1e-7
    assert np.max(np.abs(np.angle(v_helm / v_nr))) <= 1e-6


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_builtin_feeder_scaled_loads_match_nr(name) -> None:
    net = load_pandapower_net(name)
    feeder = Feeder.from_pandapower(net)
    scales = np.array(SCALES)
    result = solve(feeder, np.outer(scales, feeder.p_kw), np.outer(scales, feeder.q_kvar))
    assert result.converged.all()
    for i, scale in enumerate(SCALES):
        scaled = copy.deepcopy(net)
        scaled.load["scaling"] *= scale
        scaled.sgen["scaling"] *= scale
        assert_matches(result.v_pu[i], runpp_voltages(scaled, feeder.bus_ids))


@pytest.mark.parametrize("name", FEEDER_NAMES)
def test_builtin_feeder_profile_minutes_match_nr(name) -> None:
    profiles = day_profiles(name, seed=3)
    nets = [apply_minute(load_pandapower_net(name), profiles, m) for m in MINUTES]
    feeders = [Feeder.from_pandapower(n) for n in nets]
    p = np.stack([f.p_kw for f in feeders])
    q = np.stack([f.q_kvar for f in feeders])
    result = solve(feeders[0], p, q)
    assert result.converged.all()
    for i, net in enumerate(nets):
        assert_matches(result.v_pu[i], runpp_voltages(net, feeders[0].bus_ids))
