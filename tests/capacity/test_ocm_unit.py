"""OCM unit tests on small synthetic voltage models (fast; no load flow needed).

The synthetic solver is a quadratic voltage-drop model ``|V| = v_slack - d - c d^2`` with
``d = M p``: smooth and monotone like a radial feeder, so the GA, polish, band formation and
certification can be checked quickly and exactly. Real feeders are tested in test_ocm_paper.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from capacity.flexibility import Flexibility, FlexibilityKind
from capacity.ocm import GaSettings, compute_bands
from capacity.ocm.certify import box_points, certify_or_shrink
from capacity.ocm.ga import _fitness, run_ga
from capacity.ocm.polish import polish
from capacity.ocm.problem import StepProblem

CS = FlexibilityKind.CHARGING_STATION
CB = FlexibilityKind.COMMUNITY_BATTERY


class ToyFeeder:
    """Just what compute_bands needs from a Feeder: name, n_bus, bus_position."""

    name = "toy"

    def __init__(self, n_bus: int) -> None:
        self.n_bus = n_bus

    def bus_position(self, bus_id: int) -> int:
        if bus_id not in range(self.n_bus):
            raise ValueError(f"unknown bus id {bus_id}")
        return int(bus_id)


def quadratic_solver(m_pu_per_kw: np.ndarray, curvature: float = 0.3):
    def solve(p_kw, q_kvar, v_slack_pu):
        drop = p_kw @ m_pu_per_kw.T
        return v_slack_pu - drop - curvature * drop**2, np.ones(p_kw.shape[0], dtype=bool)

    return solve


def chain_matrix(n_bus: int, r_pu_per_kw: float = 5e-4) -> np.ndarray:
    """Radial chain: bus k's drop per kW at bus j is min(R_k, R_j), R_k = k * r."""
    r = np.arange(n_bus) * r_pu_per_kw
    return np.minimum(r[:, None], r[None, :])


CHAIN = chain_matrix(5)
SOLVER = quadratic_solver(CHAIN)
FLEX = (
    Flexibility("CS01", 2, 0.0, 22.0, CS),
    Flexibility("CS02", 4, 0.0, 22.0, CS),
    Flexibility("CB", 3, -30.0, 30.0, CB),
)


def base_loads(n_steps: int = 6) -> tuple[np.ndarray, np.ndarray]:
    p = np.zeros((n_steps, 5))
    p[:, 1] = np.linspace(0.0, 40.0, n_steps)
    p[:, 4] = 5.0
    return p, 0.3 * p


def run(objective="sum", seed=0, **kw):
    p, q = base_loads()
    return compute_bands(ToyFeeder(5), FLEX, p, q, objective=objective, seed=seed,
                         solver=SOLVER, n_random=200, **kw)


# ----------------------------------------------------------------------------- errors
def test_unknown_bus_is_rejected():
    p, q = base_loads()
    bad = (*FLEX, Flexibility("X", 9, 0.0, 1.0))
    with pytest.raises(ValueError, match="unknown bus 9"):
        compute_bands(ToyFeeder(5), bad, p, q, solver=SOLVER)


def test_p_low_above_p_high_is_rejected():
    with pytest.raises(ValueError, match="p_low_kw"):
        Flexibility("X", 1, 5.0, 1.0)
    sneaky = Flexibility("X", 1, 0.0, 1.0)
    object.__setattr__(sneaky, "p_low_kw", 5.0)  # bypass the constructor check
    p, q = base_loads()
    with pytest.raises(ValueError, match="p_low_kw > p_high_kw"):
        compute_bands(ToyFeeder(5), (sneaky,), p, q, solver=SOLVER)


@pytest.mark.parametrize(
    ("p_shape", "q_shape", "v_slack", "match"),
    [
        ((6, 4), (6, 4), 1.0, "p_kw must have shape"),
        ((6,), (6,), 1.0, "p_kw must have shape"),
        ((6, 5), (5, 5), 1.0, "q_kvar must have the shape"),
        ((6, 5), (6, 5), np.ones(5), "v_slack_pu must be a scalar or shape"),
    ],
)
def test_mismatched_shapes_are_rejected(p_shape, q_shape, v_slack, match):
    with pytest.raises(ValueError, match=match):
        compute_bands(ToyFeeder(5), FLEX, np.zeros(p_shape), np.zeros(q_shape),
                      v_slack_pu=v_slack, solver=SOLVER)


@pytest.mark.parametrize(("v_low", "v_high"), [(1.05, 0.95), (1.0, 1.0), (0.0, 1.05)])
def test_bad_voltage_limits_are_rejected(v_low, v_high):
    p, q = base_loads()
    with pytest.raises(ValueError, match="v_low < v_high"):
        compute_bands(ToyFeeder(5), FLEX, p, q, v_low=v_low, v_high=v_high, solver=SOLVER)


def test_unknown_objective_and_duplicate_names_are_rejected():
    p, q = base_loads()
    with pytest.raises(ValueError, match="unknown objective"):
        compute_bands(ToyFeeder(5), FLEX, p, q, objective="max", solver=SOLVER)
    with pytest.raises(ValueError, match="unique"):
        compute_bands(ToyFeeder(5), (FLEX[0], FLEX[0]), p, q, solver=SOLVER)


# ----------------------------------------------------------------------------- GA pieces
def test_no_infeasible_individual_beats_a_feasible_one():
    rng = np.random.default_rng(1)
    x = rng.uniform(-50, 50, (400, 3))
    viol = np.where(rng.random(400) < 0.5, 0.0, rng.uniform(1e-9, 0.5, 400))
    for sense in (1.0, -1.0):
        floor = min(sense * -150.0, sense * 150.0)
        fit = _fitness(sense, x, viol, floor)
        assert fit[viol == 0].min() > fit[viol > 0].max()
        infeasible = np.flatnonzero(viol > 0)
        order = infeasible[np.argsort(viol[infeasible])]
        assert np.all(np.diff(fit[order]) <= 0)  # smaller violation, better fitness


def toy_problem(p_base=None):
    p = np.zeros(5) if p_base is None else p_base
    inc = np.zeros((3, 5))
    for i, f in enumerate(FLEX):
        inc[i, f.bus_id] = 1.0
    return StepProblem(SOLVER, inc, p, 0.3 * p, 1.0, 0.95, 1.05)


def test_ga_population_is_evaluated_in_one_call_per_generation():
    problem = toy_problem(np.array([0, 30.0, 0, 0, 5]))
    lo = np.array([f.p_low_kw for f in FLEX])
    hi = np.array([f.p_high_kw for f in FLEX])
    settings = GaSettings(population=12, max_generations=6, patience=100)
    best = run_ga(problem, 1.0, lo, hi, [], settings, seed=3)
    assert best.feasible
    assert problem.n_calls == 1 + settings.max_generations
    assert best.generations == settings.max_generations


def test_ga_is_deterministic_while_other_threads_draw_random_numbers():
    """DEAP's operators draw from ``random``; other threads of the process (a Dask worker's event
    loop, a server) draw from it too. The GA's result must not depend on them."""
    import random
    import threading
    import time

    def yielding_solver(p_kw, q_kvar, v_slack_pu):
        time.sleep(0.001)  # let the other threads run between generations
        return SOLVER(p_kw, q_kvar, v_slack_pu)

    def ga():
        problem = toy_problem(np.array([0, 30.0, 0, 0, 5]))
        problem.solver = yielding_solver
        lo = np.array([f.p_low_kw for f in FLEX])
        hi = np.array([f.p_high_kw for f in FLEX])
        return run_ga(problem, 1.0, lo, hi, [], GaSettings(population=12, max_generations=25,
                                                            patience=100), seed=5)

    quiet = ga()
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.random()
            time.sleep(0)

    noise = threading.Thread(target=draw)
    noise.start()
    try:
        results: list = [None, None]
        threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, ga()))
                   for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
        noise.join()
    for disturbed in results:
        np.testing.assert_array_equal(disturbed.x_kw, quiet.x_kw)
        assert disturbed.generations == quiet.generations


def test_polish_is_feasible_and_never_worse_than_the_ga():
    problem = toy_problem(np.array([0, 30.0, 0, 0, 5]))
    lo = np.array([f.p_low_kw for f in FLEX])
    hi = np.array([f.p_high_kw for f in FLEX])
    for sense in (1.0, -1.0):
        for seed in range(4):
            best = run_ga(problem, sense, lo, hi, [], GaSettings(max_generations=3), seed)
            x, _ = polish(problem, sense, lo, hi, best.x_kw, 1e-5)
            viol, _ = problem.evaluate(x[None, :], 1e-5)
            assert viol[0] == 0.0
            assert sense * x.sum() >= sense * best.x_kw.sum() - 1e-12


# ----------------------------------------------------------------------------- results
def test_bands_are_valid_and_bind_at_the_limit():
    res = run()
    p_low = np.array([f.p_low_kw for f in FLEX])
    p_high = np.array([f.p_high_kw for f in FLEX])
    assert res.feasible.all()
    assert np.all(p_low <= res.p_min_kw + 1e-12)
    assert np.all(res.p_min_kw <= res.p_max_kw)
    assert np.all(res.p_max_kw <= p_high + 1e-12)
    binding = res.p_max_kw.sum(axis=1) < p_high.sum() - 1e-6
    assert binding.any()
    assert np.all(np.abs(res.v_min_at_max_pu[binding] - 0.95) < 1e-3)
    assert np.all(res.v_min_at_max_pu >= 0.95)


def test_same_seed_gives_identical_bands():
    a, b = run(seed=7), run(seed=7)
    np.testing.assert_array_equal(a.p_min_kw, b.p_min_kw)
    np.testing.assert_array_equal(a.p_max_kw, b.p_max_kw)
    np.testing.assert_array_equal(a.v_at_max_pu, b.v_at_max_pu)


def test_infeasible_step_falls_back_to_the_safest_setting():
    p = np.zeros((2, 5))
    p[0, 1] = 20.0
    p[1, 1] = 2000.0  # this load alone pulls every bus far below 0.95 pu
    stations = (FLEX[0], FLEX[1])
    res = compute_bands(ToyFeeder(5), stations, p, 0 * p, solver=SOLVER, n_random=50)
    assert res.feasible.tolist() == [True, False]
    assert res.violation_pu[0] == 0.0
    assert res.violation_pu[1] > 0.0
    np.testing.assert_array_equal(res.p_max_kw[1], [0.0, 0.0])
    np.testing.assert_array_equal(res.p_min_kw[1], [0.0, 0.0])
    v_alone = SOLVER(p[1:], 0 * p[1:], 1.0)[0]
    assert res.violation_pu[1] == pytest.approx(0.95 - v_alone.min(), abs=1e-12)


def test_random_operation_inside_the_bands_is_safe():
    res = run("two-step")
    p, q = base_loads()
    inc = np.zeros((3, 5))
    for i, f in enumerate(FLEX):
        inc[i, f.bus_id] = 1.0
    rng = np.random.default_rng(5)
    for t in range(res.n_steps):
        x = res.p_min_kw[t] + rng.random((500, 3)) * (res.p_max_kw[t] - res.p_min_kw[t])
        v, _ = SOLVER(p[t] + x @ inc, q[t] + 0 * x @ inc, 1.0)
        assert v.min() >= 0.95 and v.max() <= 1.05


# ----------------------------------------------------------------------------- variants
def test_two_step_gives_the_battery_priority():
    two, plain = run("two-step"), run("sum")
    # stage 1 (battery alone, stations off) can only leave the battery at least as much room
    assert np.all(two.p_max_kw[:, 2] >= plain.p_max_kw[:, 2] - 1e-6)
    assert np.any(two.p_max_kw[:, 2] > plain.p_max_kw[:, 2] + 1.0)
    # the stations share what the battery leaves: with the battery at P_max, V_min binds
    binding = two.p_max_kw[:, :2].sum(axis=1) < 44.0 - 1e-6
    assert np.all(np.abs(two.v_min_at_max_pu[binding] - 0.95) < 1e-3)


def test_fair_share_is_fairer_than_the_sum():
    fair, plain = run("fair"), run("sum")
    p_high = np.array([f.p_high_kw for f in FLEX])
    share_fair = (fair.p_max_kw / p_high).min(axis=1)
    share_sum = (plain.p_max_kw / p_high).min(axis=1)
    assert np.all(share_fair >= share_sum - 1e-6)
    assert np.any(share_fair > share_sum + 0.1)
    assert np.all(fair.p_max_kw.sum(axis=1) <= plain.p_max_kw.sum(axis=1) + 1e-3)


# ----------------------------------------------------------------------------- band formation
def test_inverted_argmin_argmax_are_reordered_into_a_safe_box():
    # Coupled two-bus model where a station at full power lets the battery inject more:
    # argmin has the station higher than argmax does (see docs/ocm.md, band formation).
    m = np.array([[0.0, 0.0, 0.0], [0.0, 0.3e-3, 0.5e-3], [0.0, 0.5e-3, 1.0e-3]])
    solver = quadratic_solver(m, curvature=0.0)
    flex = (Flexibility("CB", 1, -120.0, 120.0, CB), Flexibility("CS", 2, 0.0, 22.0, CS))
    p = np.zeros((1, 3))
    res = compute_bands(ToyFeeder(3), flex, p, p, solver=solver, n_random=300)
    assert res.argmin_kw[0, 1] > res.argmax_kw[0, 1] + 1.0  # the paper's vectors invert
    assert res.feasible[0]
    assert res.notes[0].startswith("reordered")
    assert np.all(res.p_min_kw[0] <= res.p_max_kw[0])
    rng = np.random.default_rng(0)
    x = res.p_min_kw[0] + rng.random((2000, 2)) * (res.p_max_kw[0] - res.p_min_kw[0])
    v, _ = solver(x @ np.array([[0, 1.0, 0], [0, 0, 1.0]]), 0 * x[:, :1] @ np.ones((1, 3)), 1.0)
    assert v.min() >= 0.95 - 1e-12 and v.max() <= 1.05 + 1e-12


def test_certification_shrinks_a_box_that_is_unsafe_inside():
    # A non-monotone model: voltage dips in the middle of the box although the corners are fine.
    def bump(p_kw, q_kvar, v_slack_pu):
        x = p_kw[:, 1:3]
        dip = 0.08 * np.exp(-np.sum((x - 10.0) ** 2, axis=1) / 8.0)
        v = np.repeat((v_slack_pu - dip)[:, None], 3, axis=1)
        return v, np.ones(p_kw.shape[0], dtype=bool)

    inc = np.array([[0, 1.0, 0], [0, 0, 1.0]])
    problem = StepProblem(bump, inc, np.zeros(3), np.zeros(3), 1.0, 0.95, 1.05)
    lo, hi = np.zeros(2), np.full(2, 20.0)
    corners, _ = box_points(lo, hi, 0, np.random.default_rng(0))
    assert problem.evaluate(corners)[0].max() == 0.0  # the corners alone would pass
    lo2, hi2, cert, shrinks = certify_or_shrink(problem, lo, hi, lo, 1000, np.random.default_rng(0))
    assert shrinks >= 1 and cert.ok
    grid = np.stack(np.meshgrid(np.linspace(lo2[0], hi2[0], 41),
                                np.linspace(lo2[1], hi2[1], 41)), -1).reshape(-1, 2)
    assert problem.evaluate(grid)[0].max() == 0.0


def test_box_points_cover_every_corner_up_to_six_flexibilities():
    rng = np.random.default_rng(0)
    for n in (1, 3, 6):
        corners, rand = box_points(np.zeros(n), np.ones(n), 10, rng)
        assert corners.shape == (2**n, n)
        assert np.unique(corners, axis=0).shape[0] == 2**n
        np.testing.assert_array_equal(corners[0], np.zeros(n))
        np.testing.assert_array_equal(corners[1], np.ones(n))
        assert rand.shape == (10, n)
    corners, _ = box_points(np.zeros(7), np.ones(7), 0, rng)
    assert corners.shape == (2, 7)


def test_many_and_fixed_flexibilities():
    # 8 devices (certification falls back to the two extreme corners plus random points), one of
    # them with a point range (not a gene), one at the slack bus (no effect on voltages).
    m = chain_matrix(9)
    solver = quadratic_solver(m)
    flex = [Flexibility(f"CS{i}", i, 0.0, 11.0, CS) for i in range(1, 8)]
    flex += [Flexibility("FIX", 8, 3.0, 3.0), Flexibility("SLACK", 0, 0.0, 5.0)]
    p = np.full((2, 9), 2.0)
    res = compute_bands(ToyFeeder(9), flex, p, 0 * p, solver=solver, n_random=100)
    assert res.feasible.all()
    assert np.all(res.certified_points == 2 + 100)
    np.testing.assert_array_equal(res.p_min_kw[:, 7], 3.0)
    np.testing.assert_array_equal(res.p_max_kw[:, 7], 3.0)
    np.testing.assert_allclose(res.p_max_kw[:, 8], 5.0)  # free capacity at the slack bus
    assert np.all(np.abs(res.v_min_at_max_pu - 0.95) < 1e-3)
    # nearer devices are filled first by the sum objective
    assert np.all(np.diff(res.p_max_kw[:, :7], axis=1) <= 1e-6)


def test_one_interval_at_a_time_with_warm_from_matches_the_batch():
    p, q = base_loads()
    batch = compute_bands(ToyFeeder(5), FLEX, p, q, solver=SOLVER, n_random=50)
    prev = None
    for t in range(p.shape[0]):
        step = compute_bands(ToyFeeder(5), FLEX, p[t:t + 1], q[t:t + 1], solver=SOLVER,
                             n_random=50, warm_from=prev)
        np.testing.assert_allclose(step.p_max_kw[0], batch.p_max_kw[t], atol=1e-2)
        np.testing.assert_allclose(step.p_min_kw[0], batch.p_min_kw[t], atol=1e-2)
        prev = step
    with pytest.raises(ValueError, match="other flexibilities"):
        compute_bands(ToyFeeder(5), FLEX[:2], p[:1], q[:1], solver=SOLVER, warm_from=prev)
