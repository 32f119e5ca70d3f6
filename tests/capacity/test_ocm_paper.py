"""OCM on the paper's test feeder (Rao et al. 2021, section 3, Fig. 6-8): the paper's findings,
optimality against an exhaustive reference and safety checked with pandapower's Newton-Raphson.
"""

from __future__ import annotations

import numpy as np
import pytest

from capacity.feeders import day_profiles, feeder_case, load_feeder, load_pandapower_net
from capacity.helm import solve
from capacity.nr_check import NewtonRaphson
from capacity.ocm import compute_bands

NAME = "paper-test-feeder"


@pytest.fixture(scope="module")
def setup():
    feeder = load_feeder(NAME)
    case = feeder_case(NAME)
    prof = day_profiles(NAME, seed=0)
    ul01 = feeder.bus_position(1)
    peak = int(np.argmax(prof.p_kw[:, ul01]))
    minutes = np.unique(np.concatenate([np.arange(0, 1440, 45), [peak]]))
    res = compute_bands(feeder, case.flexibilities, prof.p_kw[minutes], prof.q_kvar[minutes],
                        v_slack_pu=case.v_slack_pu, seed=0, n_random=300)
    return feeder, case, prof, minutes, peak, res


def test_the_nearer_station_gets_more(setup):
    _, case, _, _, _, res = setup
    assert [f.name for f in case.flexibilities] == ["CS01", "CS02"]  # CS01 nearer (Bus02)
    ok = res.feasible
    assert np.all(res.p_max_kw[ok, 0] >= res.p_max_kw[ok, 1] - 1e-6)
    assert res.p_max_kw[ok, 0].sum() > res.p_max_kw[ok, 1].sum() + 10.0


def test_ul01_peak_is_infeasible_with_both_stations_at_zero(setup):
    _, _, _, minutes, peak, res = setup
    i = int(np.flatnonzero(minutes == peak)[0])
    assert not res.feasible[i]
    assert res.violation_pu[i] > 0
    np.testing.assert_array_equal(res.p_max_kw[i], [0.0, 0.0])
    np.testing.assert_array_equal(res.p_min_kw[i], [0.0, 0.0])
    assert res.v_min_at_max_pu[i] == pytest.approx(0.95 - res.violation_pu[i], abs=1e-12)


def test_binding_bands_sit_at_the_lower_voltage_limit(setup):
    *_, res = setup
    binding = res.feasible & (res.p_max_kw.sum(axis=1) < 44.0 - 1e-6)
    assert binding.sum() >= 10
    v_min = res.v_min_at_max_pu[binding]
    assert np.all(v_min >= 0.95)
    assert np.all(v_min - 0.95 < 1e-3)


def exhaustive_extremes(feeder, inc, p_base, q_base, v_slack, lo, hi, n1=111, n2=12, bisect=14):
    """Reference max and min of CS01 + CS02 s.t. 0.95 <= |V| <= 1.05, by exhaustion.

    Every CS01 value on a fine grid; for each, CS02's feasible set is bracketed on a grid and
    its ends refined by bisection (HELM, batched). Independent of the GA and its polish.
    """
    def feasible(x):
        p = p_base[None, :] + x @ inc
        r = solve(feeder, p_kw=p, q_kvar=np.broadcast_to(q_base, p.shape), v_slack_pu=v_slack)
        v = np.abs(r.v_pu)
        return r.converged & (v.min(axis=1) >= 0.95) & (v.max(axis=1) <= 1.05)

    x1 = np.linspace(lo[0], hi[0], n1)
    x2 = np.linspace(lo[1], hi[1], n2)
    g1, g2 = np.meshgrid(x1, x2, indexing="ij")
    ok = feasible(np.stack([g1.ravel(), g2.ravel()], 1)).reshape(n1, n2)
    if not ok.any():
        return None
    rows = np.flatnonzero(ok.any(axis=1))
    best_max, best_min = -np.inf, np.inf
    for end in ("upper", "lower"):
        idx = np.array([np.flatnonzero(ok[r])[-1 if end == "upper" else 0] for r in rows])
        a = x2[idx]  # feasible
        b = np.where(end == "upper", x2[np.minimum(idx + 1, n2 - 1)], x2[np.maximum(idx - 1, 0)])
        edge = (idx == (n2 - 1)) if end == "upper" else (idx == 0)
        b = np.where(edge, a, b)
        for _ in range(bisect):
            mid = 0.5 * (a + b)
            f = feasible(np.stack([x1[rows], mid], 1))
            a, b = np.where(f, mid, a), np.where(f, b, mid)
        total = x1[rows] + a
        if end == "upper":
            best_max = total.max()
        else:
            best_min = total.min()
    return best_max, best_min


def test_sums_match_an_exhaustive_reference_within_one_percent(setup):
    feeder, case, prof, minutes, _, res = setup
    inc = np.zeros((2, feeder.n_bus))
    for i, f in enumerate(case.flexibilities):
        inc[i, feeder.bus_position(f.bus_id)] = 1.0
    lo, hi = np.zeros(2), np.full(2, 22.0)
    checked = 0
    for k, m in enumerate(minutes[:24]):
        ref = exhaustive_extremes(
            feeder, inc, prof.p_kw[m], prof.q_kvar[m], case.v_slack_pu, lo, hi
        )
        if ref is None:
            assert not res.feasible[k]
            continue
        ref_max, ref_min = ref
        tol = 0.01 * max(ref_max - ref_min, 1e-9)
        assert res.feasible[k]
        assert res.p_max_kw[k].sum() == pytest.approx(ref_max, abs=tol)
        assert res.p_min_kw[k].sum() == pytest.approx(ref_min, abs=tol)
        checked += 1
    assert checked >= 20


def nr_safety_check(solver_nr, inc, p_base, q_base, v_slack, p_min, p_max, n_random, rng):
    """Worst excess at every corner and n_random points (NR): |V| outside 0.95..1.05 (pu) or
    a branch loaded above 100 % (pu of its rating)."""
    n = p_min.size
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    pts = np.vstack([np.where(bits.astype(bool), p_max, p_min),
                     p_min + rng.random((n_random, n)) * (p_max - p_min)])
    p = p_base[None, :] + pts @ inc
    v, ok, loading = solver_nr(p, np.broadcast_to(q_base, p.shape), v_slack)
    assert ok.all()
    thermal = (np.nanmax(loading) - 100.0) / 100.0 if loading.size else 0.0
    return max(0.95 - v.min(), v.max() - 1.05, thermal, 0.0)


def test_operation_inside_certified_bands_is_safe_under_newton_raphson(setup):
    feeder, case, prof, minutes, _, res = setup
    nr = NewtonRaphson(feeder, load_pandapower_net(NAME))
    inc = np.zeros((2, feeder.n_bus))
    for i, f in enumerate(case.flexibilities):
        inc[i, feeder.bus_position(f.bus_id)] = 1.0
    binding = np.flatnonzero(res.feasible & (res.p_max_kw.sum(axis=1) < 44.0 - 1e-6))
    rng = np.random.default_rng(0)
    k = binding[len(binding) // 2]  # one binding step here; more in the slow test below
    m = minutes[k]
    excess = nr_safety_check(nr, inc, prof.p_kw[m], prof.q_kvar[m], case.v_slack_pu,
                             res.p_min_kw[k], res.p_max_kw[k], 1000, rng)
    assert excess <= 1e-4


def test_same_seed_gives_identical_bands_with_helm(setup):
    feeder, case, prof, minutes, _, _ = setup
    m = minutes[10:13]
    runs = [compute_bands(feeder, case.flexibilities, prof.p_kw[m], prof.q_kvar[m], seed=3,
                          n_random=100) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].p_min_kw, runs[1].p_min_kw)
    np.testing.assert_array_equal(runs[0].p_max_kw, runs[1].p_max_kw)
    np.testing.assert_array_equal(runs[0].v_random_stats_pu, runs[1].v_random_stats_pu)


@pytest.mark.parametrize("name", ["paper-test-feeder", "heimschuh-like", "cigre-lv"])
def test_voltages_fall_when_any_flexibility_consumes_more(name):
    """The monotonicity band formation relies on, checked (not assumed) at random states."""
    feeder = load_feeder(name)
    case = feeder_case(name)
    prof = day_profiles(name, seed=0)
    rng = np.random.default_rng(4)
    flex = case.flexibilities
    lo = np.array([f.p_low_kw for f in flex])
    hi = np.array([f.p_high_kw for f in flex])
    inc = np.zeros((len(flex), feeder.n_bus))
    for i, f in enumerate(flex):
        inc[i, feeder.bus_position(f.bus_id)] = 1.0
    minutes = rng.integers(0, 1440, 40)
    x = lo + rng.random((40, len(flex))) * (hi - lo)
    base = prof.p_kw[minutes] + x @ inc
    step = 0.5  # kW
    p = np.concatenate([base] + [base + step * inc[i] for i in range(len(flex))])
    q = np.tile(prof.q_kvar[minutes], (len(flex) + 1, 1))
    r = solve(feeder, p_kw=p, q_kvar=q, v_slack_pu=case.v_slack_pu)
    assert r.converged.all()
    v = np.abs(r.v_pu).reshape(len(flex) + 1, 40, feeder.n_bus)
    rise = v[1:] - v[0]
    assert np.all(rise <= 1e-9)  # HELM converges to 1e-10: unaffected buses move by noise only
    for i, f in enumerate(flex):
        assert np.all(rise[i, :, feeder.bus_position(f.bus_id)] < -1e-5)


def test_fair_share_gives_the_far_station_its_share(setup):
    feeder, case, prof, minutes, _, res = setup
    binding = np.flatnonzero(res.feasible & (res.p_max_kw.sum(axis=1) < 44.0 - 1e-6))[:6]
    m = minutes[binding]
    fair = compute_bands(feeder, case.flexibilities, prof.p_kw[m], prof.q_kvar[m],
                         objective="fair", n_random=100)
    assert fair.feasible.all()
    share_fair = fair.p_max_kw / 22.0
    share_sum = res.p_max_kw[binding] / 22.0
    assert np.all(share_fair.min(axis=1) >= share_sum.min(axis=1) - 1e-6)
    assert np.all(fair.p_max_kw[:, 1] > res.p_max_kw[binding, 1] + 1.0)  # CS02 gains
    np.testing.assert_allclose(share_fair[:, 0], share_fair[:, 1], atol=2e-3)  # equal shares
    assert np.all(fair.p_max_kw.sum(axis=1) <= res.p_max_kw[binding].sum(axis=1) + 1e-3)
    assert np.all(np.abs(fair.v_min_at_max_pu - 0.95) < 1e-3)


@pytest.mark.slow
def test_fair_bands_are_safe_under_newton_raphson(setup):
    feeder, case, prof, minutes, _, res = setup
    k = int(np.flatnonzero(res.feasible & (res.p_max_kw.sum(axis=1) < 44.0 - 1e-6))[0])
    m = minutes[k]
    fair = compute_bands(feeder, case.flexibilities, prof.p_kw[m:m + 1], prof.q_kvar[m:m + 1],
                         objective="fair", n_random=100)
    assert fair.feasible[0] and fair.p_max_kw[0, 1] > 1.0
    nr = NewtonRaphson(feeder, load_pandapower_net(NAME))
    inc = np.zeros((2, feeder.n_bus))
    for i, f in enumerate(case.flexibilities):
        inc[i, feeder.bus_position(f.bus_id)] = 1.0
    excess = nr_safety_check(nr, inc, prof.p_kw[m], prof.q_kvar[m], case.v_slack_pu,
                             fair.p_min_kw[0], fair.p_max_kw[0], 1000, np.random.default_rng(3))
    assert excess <= 1e-4
