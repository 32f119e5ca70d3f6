"""Fixtures of the oracle tests shared by several modules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from capacity.feeders import feeder_case
from capacity.helm import solve
from gridshare.chain.client import connect
from oracle.state import feeder_model, feeder_profiles
from tests.oracle.oracle_helpers import FAST_OCM, deploy_feeder


def _evening_minute(seed: int) -> int:
    """The first minute of the interval with the lowest voltage at rest of the day ``seed``."""
    feeder, profiles = feeder_model("heimschuh-like"), feeder_profiles("heimschuh-like", seed)
    v = np.abs(solve(feeder, p_kw=profiles.p_kw, q_kvar=profiles.q_kvar).v_pu).min(axis=1)
    return int(np.argmin(v)) // 15 * 15


@pytest.fixture(scope="module")
def evening():
    """An oracle with the battery reserve after a battery discharge at noon and the readings
    of the evening interval with the lowest voltage (the meter simulator's day, seed 1)."""
    ocm = dataclasses.replace(FAST_OCM, battery_reserve_h=8.0, history_days=3)
    d = deploy_feeder(connect())
    names = [f.name for f in feeder_case("heimschuh-like").flexibilities]
    col = next(i for i, f in enumerate(feeder_case("heimschuh-like").flexibilities)
               if f.kind.value == "community_battery")
    noon = 720

    def flex_p_kw(minutes: np.ndarray) -> np.ndarray:
        out = np.zeros((np.asarray(minutes).size, len(names)))
        out[(np.asarray(minutes) >= noon) & (np.asarray(minutes) < noon + 15), col] = -20.0
        return out

    d.sim.flex_p_kw = flex_p_kw
    first = _evening_minute(1)
    assert first > noon + 15
    oracle = d.oracle(":memory:", ocm=ocm)
    d.sim.post(range(noon, noon + 15))
    oracle.step()
    d.sim.post(range(first - 15, first))
    oracle.step()
    yield d, oracle, ocm, d.interval_of_minute(first)
    oracle.close()
