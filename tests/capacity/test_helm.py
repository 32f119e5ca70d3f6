"""HELM against pandapower's Newton-Raphson, batching, voltage collapse and input errors."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from capacity.grid import Feeder
from capacity.helm import solve

NETWORKS = {
    "cigre-lv": pn.create_cigre_network_lv,
    "kerber-dorfnetz": pn.create_kerber_dorfnetz,
    "kerber-landnetz-kabel-2": pn.create_kerber_landnetz_kabel_2,
}
SCALES = (0.2, 0.5, 1.0, 2.0, 3.0)


def newton_raphson(net, scale: float) -> np.ndarray:
    """pandapower.runpp (NR, default options, tight tolerance) with loads and sgens scaled."""
    net = copy.deepcopy(net)
    net.load["scaling"] = net.load["scaling"] * scale
    net.sgen["scaling"] = net.sgen["scaling"] * scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-11, max_iteration=50, numba=False)
    vm = net.res_bus.vm_pu.to_numpy()
    va = np.deg2rad(net.res_bus.va_degree.to_numpy())
    return vm * np.exp(1j * va)


def assert_matches_nr(v_helm: np.ndarray, v_nr: np.ndarray) -> None:
    assert np.all(np.isfinite(v_helm))
    dv = np.max(np.abs(np.abs(v_helm) - np.abs(v_nr)))
    dang = np.max(np.abs(np.angle(v_helm / v_nr)))
    assert dv <= 1e-7, f"max |dV| = {dv:.3e} pu"
    assert dang <= 1e-6, f"max |d angle| = {dang:.3e} rad"


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def network(request):
    net = NETWORKS[request.param]()
    return request.param, net, Feeder.from_pandapower(net, name=request.param)


def test_matches_newton_raphson_for_scaled_loads(network) -> None:
    name, net, feeder = network
    scales = np.array(SCALES)
    result = solve(feeder, scales[:, None] * feeder.p_kw, scales[:, None] * feeder.q_kvar)
    assert result.v_pu.shape == (len(SCALES), feeder.n_bus)
    assert result.converged.all(), f"{name}: not converged at {scales[~result.converged]}"
    for i, scale in enumerate(SCALES):
        assert_matches_nr(result.v_pu[i], newton_raphson(net, scale))


def test_base_case_equals_explicit_base_loads(network) -> None:
    _, _, feeder = network
    base = solve(feeder)
    explicit = solve(feeder, p_kw=feeder.p_kw, q_kvar=feeder.q_kvar)
    assert base.v_pu.shape == (1, feeder.n_bus)
    np.testing.assert_array_equal(base.v_pu, explicit.v_pu)


def test_batch_equals_single_solves(network) -> None:
    _, _, feeder = network
    rng = np.random.default_rng(7)
    n_scen = 12
    factors = rng.uniform(0.0, 2.5, size=(n_scen, feeder.n_bus))
    p = factors * feeder.p_kw
    q = factors * feeder.q_kvar
    v_slack = rng.uniform(0.97, 1.05, size=n_scen)
    batch = solve(feeder, p, q, v_slack_pu=v_slack)
    assert batch.converged.all()
    for s in range(n_scen):
        single = solve(feeder, p[s], q[s], v_slack_pu=v_slack[s])
        assert single.converged[0]
        assert np.max(np.abs(single.v_pu[0] - batch.v_pu[s])) <= 1e-12


def loadability_scale(feeder: Feeder) -> float:
    """Largest load scale with a HELM solution, by bisection (relative precision 1e-3)."""
    lo, hi = 1.0, 2.0
    while solve(feeder, hi * feeder.p_kw, hi * feeder.q_kvar).converged[0]:
        lo, hi = hi, 2 * hi
    while hi / lo > 1.001:
        mid = np.sqrt(lo * hi)
        if solve(feeder, mid * feeder.p_kw, mid * feeder.q_kvar).converged[0]:
            lo = mid
        else:
            hi = mid
    return lo


def test_collapse_not_converged_and_near_limit_matches_nr() -> None:
    net = pn.create_kerber_landnetz_kabel_2()
    feeder = Feeder.from_pandapower(net)
    limit = loadability_scale(feeder)
    near, far = 0.97 * limit, 1.5 * limit
    result = solve(feeder, np.outer([near, far], feeder.p_kw), np.outer([near, far], feeder.q_kvar))
    assert result.converged.tolist() == [True, False]
    assert np.all(np.isnan(result.v_pu[1]))
    assert_matches_nr(result.v_pu[0], newton_raphson(net, near))
    assert np.min(np.abs(result.v_pu[0])) < 0.75  # really close to the nose point


def test_slack_voltage_scales_no_load_solution() -> None:
    feeder = Feeder.from_pandapower(pn.create_kerber_dorfnetz())
    zero = np.zeros(feeder.n_bus)
    result = solve(feeder, zero, zero, v_slack_pu=np.array([0.98, 1.03]))
    # no load: only the magnetising current and line charging act, almost flat profile
    assert result.converged.all()
    np.testing.assert_allclose(result.vm_pu[1] / result.vm_pu[0], 1.03 / 0.98, rtol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p_kw": "nan"}, "NaN or infinite"),
        ({"q_kvar": "inf"}, "NaN or infinite"),
        ({"p_kw": "short"}, "shape"),
        ({"p_kw": "3d"}, "shape"),
        ({"p_kw": "rows", "q_kvar": "rows3"}, "scenarios"),
        ({"p_kw": "rows", "v_slack_pu": np.ones(5)}, "v_slack_pu"),
        ({"v_slack_pu": -1.0}, "v_slack_pu"),
        ({"v_slack_pu": 1.0 + 0.1j}, "complex"),
        ({"tol_pu": 0.0}, "tol_pu"),
        ({"max_coefficients": 2}, "max_coefficients"),
    ],
)
def test_bad_inputs_raise(kwargs, message) -> None:
    feeder = Feeder.from_pandapower(pn.create_kerber_landnetz_kabel_2())
    n = feeder.n_bus
    values = {
        "nan": np.where(np.arange(n) == 3, np.nan, 1.0),
        "inf": np.where(np.arange(n) == 3, np.inf, 1.0),
        "short": np.ones(n - 1),
        "3d": np.ones((2, 2, n)),
        "rows": np.ones((2, n)),
        "rows3": np.ones((3, n)),
    }
    args = {k: values.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        solve(feeder, **args)


def test_sparse_lu_path_equals_dense_path(monkeypatch) -> None:
    """Large feeders use SuperLU solves instead of the dense inverse: same voltages."""
    import capacity.helm as helm

    net = pn.create_cigre_network_lv()
    dense = Feeder.from_pandapower(net)
    monkeypatch.setattr(helm, "_DENSE_MAX_NODES", 0)
    sparse = Feeder.from_pandapower(net)
    scales = np.array([0.5, 1.0, 2.0])
    p, q = np.outer(scales, dense.p_kw), np.outer(scales, dense.q_kvar)
    r_sparse = solve(sparse, p, q)
    assert helm._helm_model(sparse).z_t is None
    r_dense = solve(dense, p, q)
    assert r_sparse.converged.all() and r_dense.converged.all()
    assert np.max(np.abs(r_sparse.v_pu - r_dense.v_pu)) <= 1e-9
    assert_matches_nr(r_sparse.v_pu[1], newton_raphson(net, 1.0))


def test_loaded_bus_pattern_changes_between_calls() -> None:
    """Scenarios that load different buses (and none at all) reuse the factorisation."""
    net = pn.create_kerber_dorfnetz()
    feeder = Feeder.from_pandapower(net)
    p = np.zeros((3, feeder.n_bus))
    q = np.zeros((3, feeder.n_bus))
    p[1, 40] = 30.0
    p[2, :] = feeder.p_kw
    q[2, :] = feeder.q_kvar
    batch = solve(feeder, p, q)
    assert batch.converged.all()
    for s in range(3):
        single = solve(feeder, p[s], q[s])
        assert np.max(np.abs(single.v_pu[0] - batch.v_pu[s])) <= 1e-12
    assert_matches_nr(batch.v_pu[2], newton_raphson(net, 1.0))
    assert np.argmin(batch.vm_pu[1]) == 40


def test_large_feeder_single_solve_matches_batch_and_nr() -> None:
    """A 294-bus feeder: the single-scenario path (sparse LU solves) equals the batch path."""
    net = pn.create_kerber_vorstadtnetz_kabel_1()
    feeder = Feeder.from_pandapower(net)
    scales = np.array([0.5, 1.0, 2.0])
    batch = solve(feeder, np.outer(scales, feeder.p_kw), np.outer(scales, feeder.q_kvar))
    assert batch.converged.all()
    for i, scale in enumerate(scales):
        single = solve(feeder, scale * feeder.p_kw, scale * feeder.q_kvar)
        assert single.converged[0]
        assert np.max(np.abs(single.v_pu[0] - batch.v_pu[i])) <= 1e-12
    assert_matches_nr(batch.v_pu[1], newton_raphson(net, 1.0))


def test_collapsed_and_converged_scenarios_in_one_batch() -> None:
    feeder = Feeder.from_pandapower(pn.create_kerber_landnetz_kabel_2())
    scales = np.array([1.0, 40.0, 2.0, 80.0])
    batch = solve(feeder, np.outer(scales, feeder.p_kw), np.outer(scales, feeder.q_kvar),
                  max_coefficients=40)
    assert batch.converged.tolist() == [True, False, True, False]
    assert np.isnan(batch.v_pu[[1, 3]]).all() and np.isfinite(batch.v_pu[[0, 2]]).all()
    assert batch.n_coefficients == 40
    for i, scale in enumerate(scales):
        single = solve(feeder, scale * feeder.p_kw, scale * feeder.q_kvar, max_coefficients=40)
        assert single.converged[0] == batch.converged[i]
        np.testing.assert_allclose(single.v_pu[0], batch.v_pu[i], rtol=0, atol=1e-12)
