"""Padé machinery of HELM on functions with known values at a = 1."""

from __future__ import annotations

import math

import numpy as np

from capacity.pade import Wynn, pade_pair, pade_single


def sqrt_branch_coefficients(alpha_c: np.ndarray, n_coef: int) -> np.ndarray:
    """Maclaurin coefficients of sqrt(1 - a / alpha_c) (a voltage-collapse-like branch point),
    one column per alpha_c."""
    c = np.empty((n_coef, alpha_c.shape[0]))
    c[0] = 1.0
    for k in range(1, n_coef):  # binomial series of (1 - x)^(1/2)
        c[k] = c[k - 1] * (k - 1.5) / k / alpha_c
    return c


def test_matrix_pade_converges_past_the_taylor_radius_limit() -> None:
    alpha_c = np.array([1.2, 2.0, 5.0])  # singularities beyond a = 1: Taylor converges slowly
    exact = np.sqrt(1.0 - 1.0 / alpha_c)
    n_coef = 30
    coefs = sqrt_branch_coefficients(alpha_c, n_coef).astype(complex)
    # one scenario per column, one "bus" each: (S, N, n)
    per_scenario = np.moveaxis(coefs, 1, 0)[:, :, None]
    gram = np.einsum("sai,sbi->sab", per_scenario.conj(), per_scenario)
    a_n, a_m = pade_pair(gram, per_scenario, n_coef - 1, None)
    np.testing.assert_allclose(a_n[:, 0].real, exact, atol=1e-9)
    taylor = coefs.sum(axis=0)
    assert abs(taylor[0] - exact[0]) > 1e-5  # the plain series is still far off at alpha_c 1.2
    single_n, single_m = pade_single(gram[0], per_scenario[0], n_coef - 1)
    np.testing.assert_allclose(single_n, a_n[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(single_m, a_m[0], rtol=0, atol=1e-13)
    assert np.max(np.abs(a_n - a_m)) < 1e-6


def test_wynn_epsilon_accelerates_alternating_series() -> None:
    n_terms = 15
    terms = np.array([(-1.0) ** k / (k + 1) for k in range(n_terms)], dtype=complex)  # log(2)
    sums = np.cumsum(terms)[:, None, None]
    wynn = Wynn()
    wynn.extend(sums[:8])
    wynn.extend(sums[8:])  # extension in two parts equals one pass
    best, previous = wynn.latest()
    assert abs(best[0, 0] - math.log(2)) < 1e-9
    assert abs(sums[-1, 0, 0] - math.log(2)) > 1e-2
    assert abs(best[0, 0] - previous[0, 0]) < 1e-8
