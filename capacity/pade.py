"""Padé approximants at a = 1 of the HELM voltage series (OCM paper section 2.2.3).

Matrix Padé: per scenario one denominator common to all buses, from the Gram matrix of the
series coefficients (``pade_pair`` for batches, ``pade_single`` for one scenario); scalar Padé
per bus by Wynn's epsilon algorithm on the partial sums (``Wynn``), used by ``capacity.helm``
as the last resort before declaring a voltage collapse.
"""

from __future__ import annotations

import numpy as np

RIDGE = 1e-13
"""Relative regularisation of the denominators' normal equations (they are Jacobi-scaled)."""

class Wynn:
    """Wynn's epsilon table on partial sums, extended column by column.

    Only the last two entries of every column are kept; vectorised over (S, n). Even columns
    ``eps_2k^(m)`` are the Padé approximants [m+k / k] at a = 1.
    """

    def __init__(self) -> None:
        self.tails: list[np.ndarray] = []
        self.lens: list[int] = []

    def extend(self, new_sums: np.ndarray) -> None:
        """Append partial sums (d, S, n) and extend every column."""
        if not self.tails:
            self.tails.append(new_sums)
            self.lens.append(new_sums.shape[0])
        else:
            self.tails[0] = np.concatenate([self.tails[0], new_sums])
            self.lens[0] += new_sums.shape[0]
        k = 0
        with np.errstate(all="ignore"):
            while True:
                len_k = self.lens[k]
                len_next = self.lens[k + 1] if k + 1 < len(self.lens) else 0
                target = len_k - 1
                if target <= len_next:
                    break
                ek = self.tails[k]
                off_k = len_k - ek.shape[0]
                a = ek[len_next - off_k : target - off_k + 1]
                new = 1.0 / (a[1:] - a[:-1])
                if k > 0:
                    ep = self.tails[k - 1]
                    off_p = self.lens[k - 1] - ep.shape[0]
                    new += ep[len_next + 1 - off_p : target + 1 - off_p]
                if k + 1 < len(self.tails):
                    self.tails[k + 1] = np.concatenate([self.tails[k + 1], new])
                    self.lens[k + 1] = target
                else:
                    self.tails.append(new)
                    self.lens.append(target)
                k += 1
        for i, t in enumerate(self.tails):
            if t.shape[0] > 2:
                self.tails[i] = t[-2:]

    def latest(self) -> tuple[np.ndarray, np.ndarray]:
        """The two latest diagonal approximants: from all sums, and from all but the last."""
        k_n = max(k for k in range(0, len(self.lens), 2) if self.lens[k] >= 1)
        k_m = max(k for k in range(0, len(self.lens), 2) if self.lens[k] >= 2)
        a_n = self.tails[k_n][-1]
        a_m = self.tails[k_m][-2]
        s_n = self.tails[0][-1]
        s_m = self.tails[0][-2]
        a_n = np.where(np.isfinite(a_n), a_n, s_n)
        a_m = np.where(np.isfinite(a_m), a_m, s_m)
        return a_n, a_m

    def keep(self, rows: np.ndarray) -> None:
        """Keep only the given scenarios (axis 1)."""
        self.tails = [t[:, rows] for t in self.tails]


_PADE_INDEX: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _pade_index(n_last: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays that sum the Gram matrix into the normal equations of [L/M], L+M=n_last."""
    idx = _PADE_INDEX.get(n_last)
    if idx is None:
        m = n_last // 2
        el = n_last - m
        k = el + np.arange(1, m + 1)[:, None] - np.arange(m + 1)[None, :]  # (m, m+1)
        idx = (k[:, :, None], k[:, None, :])
        _PADE_INDEX[n_last] = idx
    return idx


_RIDGE_CACHE: dict[int, np.ndarray] = {}


def _ridge(m: int) -> np.ndarray:
    eye = _RIDGE_CACHE.get(m)
    if eye is None:
        eye = _RIDGE_CACHE[m] = RIDGE * np.eye(m)
    return eye


def _normal_equations(
    gram: np.ndarray, n_last: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jacobi-scaled normal equations (a, b, scaling d) of the common Padé denominator of
    [L/M], L+M = n_last (see ``pade_pair``), padded with identity rows to ``size`` unknowns."""
    m = n_last // 2
    n_scen = gram.shape[0]
    a = np.empty((n_scen, size, size), dtype=complex)
    b = np.zeros((n_scen, size), dtype=complex)
    d = np.ones((n_scen, size))
    if m:
        ia, ib = _pade_index(n_last)
        h = gram[:, ia, ib].sum(axis=1)  # (S, m+1, m+1)
        dm = np.sqrt(np.abs(np.diagonal(h, axis1=1, axis2=2).real[:, 1:]))
        dm[dm == 0] = 1.0
        d[:, :m] = dm
        a[:, :m, :m] = h[:, 1:, 1:] / (dm[:, :, None] * dm[:, None, :])
        a[:, :m, :m] += _ridge(m)
        b[:, :m] = h[:, 1:, 0] / dm
    if m < size:
        a[:, m:, :] = 0.0
        a[:, :, m:] = 0.0
        a[:, np.arange(m, size), np.arange(m, size)] = 1.0
    return a, b, d


def pade_pair(
    gram: np.ndarray, coefs: np.ndarray, k: int, rows: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The approximants at a = 1 from coefficients 0..k and 0..k-1 ([L/M], L+M = k and k-1),
    with one batched solve and one product for both.

    Each denominator q (q_0 = 1) minimises sum_{r=1..M} ||sum_j q_j c[L+r-j]||^2 over the buses
    of ``gram`` (``capacity.helm`` uses probe buses), one denominator per scenario (a matrix
    Padé approximant); the numerator's value at a = 1
    is sum_i u_i c_i with u_i = sum_{j <= min(M, L-i)} q_j, so P(1)/Q(1) is one product with
    the coefficient history ``coefs`` (S, N, n). ``rows`` selects scenarios (None: all)."""
    m_n, m_m = k // 2, (k - 1) // 2
    el_n, el_m = k - m_n, k - 1 - m_m
    size = max(m_n, 1)
    a_n, b_n, d_n = _normal_equations(gram, k, size)
    a_m, b_m, d_m = _normal_equations(gram, k - 1, size)
    n_scen = gram.shape[0]
    y = np.linalg.solve(
        np.concatenate([a_n, a_m]), np.concatenate([b_n, b_m])[:, :, None]
    )[:, :, 0]
    y /= -np.concatenate([d_n, d_m])
    q = np.ones((2, n_scen, size + 1), dtype=complex)
    q[:, :, 1:] = y.reshape(2, n_scen, size)
    q_total = np.array([q[0, :, : m_n + 1].sum(axis=1), q[1, :, : m_m + 1].sum(axis=1)])
    length = max(el_n, el_m) + 1
    u = np.zeros((n_scen, 2, length), dtype=complex)
    for i, (m, el) in enumerate(((m_n, el_n), (m_m, el_m))):
        u[:, i, : el - m + 1] = q_total[i][:, None]
        if m:
            u[:, i, el - m + 1 : el + 1] = np.cumsum(q[i, :, : m + 1], axis=1)[:, m - 1 :: -1]
    c = coefs[:, :length] if rows is None else coefs[rows, :length]
    num = np.matmul(u, c)  # (S, 2, n)
    return num[:, 0] / q_total[0][:, None], num[:, 1] / q_total[1][:, None]


def pade_single(gram: np.ndarray, coefs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``pade_pair`` for one scenario: (S-less) ``gram`` (N, N) and ``coefs`` (N, n); the two
    approximants from coefficients 0..k and 0..k-1, with one solve and one product."""
    m_n, m_m = k // 2, (k - 1) // 2
    el_n, el_m = k - m_n, k - 1 - m_m
    size = max(m_n, 1)
    a = np.zeros((2, size, size), dtype=complex)
    b = np.zeros((2, size), dtype=complex)
    d = np.ones((2, size))
    for i, (n_last, m) in enumerate(((k, m_n), (k - 1, m_m))):
        if m:
            ia, ib = _pade_index(n_last)
            h = gram[ia, ib].sum(axis=0)
            dm = np.sqrt(np.abs(h.diagonal().real[1:]))
            dm[dm == 0] = 1.0
            d[i, :m] = dm
            a[i, :m, :m] = h[1:, 1:] / (dm[:, None] * dm[None, :])
            a[i, :m, :m] += _ridge(m)
            b[i, :m] = h[1:, 0] / dm
        a[i, range(m, size), range(m, size)] = 1.0
    q = np.ones((2, size + 1), dtype=complex)
    q[:, 1:] = np.linalg.solve(a, b[:, :, None])[:, :, 0] / -d
    q_n, q_m = q[0, : m_n + 1], q[1, : m_m + 1]
    totals = (q_n.sum(), q_m.sum())
    length = max(el_n, el_m) + 1
    u = np.zeros((2, length), dtype=complex)
    for i, (qq, m, el) in enumerate(((q_n, m_n, el_n), (q_m, m_m, el_m))):
        u[i, : el - m + 1] = totals[i]
        if m:
            u[i, el - m + 1 : el + 1] = np.cumsum(qq)[m - 1 :: -1]
    num = u @ coefs[:length]
    return num[0] / totals[0], num[1] / totals[1]
