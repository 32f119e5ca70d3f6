"""Table 1 trends (paper Fig. 4 and 5) on the synthetic paper-size case."""

from __future__ import annotations

import numpy as np
import pytest

from market.aggregator import synthetic_case
from market.aggregator.experiments import case5_disturbance_pct, case5_envelope_pct, table1

LEVELS = (-25.0, -15.0, -5.0, 5.0, 15.0, 25.0)


@pytest.mark.parametrize("number", [1, 2])
def test_demand_disturbance_trends(number: int) -> None:
    rows = {r.disturbance_pct: r for r in table1(synthetic_case(0), number, LEVELS)}
    assert all(r.all_hours_optimal for r in rows.values())
    diff = {pct: r.difference_pct for pct, r in rows.items()}
    # the difference to the day-ahead grows with the size of the disturbance ...
    for sign in (-1.0, 1.0):
        sizes = [abs(diff[sign * p]) for p in (5.0, 15.0, 25.0)]
        assert sizes[0] < sizes[1] < sizes[2]
    # ... and is larger for positive demand errors (Fig. 4)
    for p in (5.0, 15.0, 25.0):
        assert diff[p] > 0 > diff[-p]
        assert abs(diff[p]) > abs(diff[-p])
    # same order of magnitude as the paper (5.20% at +5%, 33.62% at +25% for case 1)
    assert 2.0 < diff[5.0] < 12.0 and 15.0 < diff[25.0] < 50.0


def test_renewable_disturbance_trends() -> None:
    rows = {r.disturbance_pct: r for r in table1(synthetic_case(0), 4, (-25.0, -5.0, 5.0, 25.0))}
    diff = {pct: r.difference_pct for pct, r in rows.items()}
    # more renewable energy lowers the cost, less raises it; small effect (Fig. 5: ~3%)
    assert diff[25.0] < diff[5.0] < 0 < diff[-5.0] < diff[-25.0]
    assert max(abs(d) for d in diff.values()) < 10.0


def test_case5_disturbance_lies_in_its_envelope() -> None:
    lo, hi = case5_envelope_pct()
    pct = case5_disturbance_pct(seed=3)
    assert pct.shape == (24,)
    assert np.all(lo <= pct) and np.all(pct <= hi)
    np.testing.assert_array_equal(pct, case5_disturbance_pct(seed=3))
