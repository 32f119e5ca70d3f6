"""Padé approximants at a = 1 of the HELM voltage series (OCM paper section 2.2.3).

Matrix Padé: per scenario one denominator common to all buses, from the Gram matrix of the
series coefficients (``pade_pair`` for batches, ``pade_single`` for one scenario); scalar Padé
per bus by Wynn's epsilon algorithm on the partial sums (``Wynn``), used by ``capacity.helm``
as the last resort before declaring a voltage collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import zgesv as _zgesv

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


@dataclass(frozen=True)
class _PairPlan:
    """Fixed index algebra of the two approximants [L/M] (L+M = k and k-1) of one check,
    precomputed per k. ``idx`` gathers, from the flattened Gram matrix with a zero appended,
    the M terms of every entry of both normal equations (h[a, b] = sum_{r=1..M}
    G[L+r-a, L+r-b]; rows: the entries of the first matrix, of the second, then both
    right-hand sides h[a, 0]); ``diag`` picks both matrices' diagonals from those rows;
    ``r`` maps the two denominators (q_0 = 1 included) to the numerator weights u_i."""

    m_n: int
    m_m: int
    length: int
    idx: np.ndarray  # (M_n, M_n^2 + M_m^2 + M_n + M_m) int (sums over axis 0)
    diag: np.ndarray  # (M_n + M_m,) rows of the diagonal entries
    r: np.ndarray  # (2 * length, M_n + M_m + 2) real
    ridge_n: np.ndarray  # (M_n, M_n)
    ridge_m: np.ndarray  # (M_m, M_m)


_PAIR_PLANS: dict[int, _PairPlan] = {}


def _pair_plan(k: int) -> _PairPlan:
    plan = _PAIR_PLANS.get(k)
    if plan is not None:
        return plan
    n = k + 1
    m_n, m_m = k // 2, (k - 1) // 2
    systems = ((k - m_n, m_n, 0), (k - 1 - m_m, m_m, m_n))  # (L, M, offset in the unknowns)
    mt = m_n + m_m
    zero = n * n  # index of the appended zero (pads the shorter sums)
    entries, rhs, diag = [], [], []
    r_map = np.zeros((2, k - m_n + 1, mt + 2))
    for i, (el, m, off) in enumerate(systems):
        ab = np.arange(1, m + 1)
        r = ab[None, None, :]  # terms r = 1..M on the last axis, padded to M_n terms
        pad = np.full((m, m_n - m), zero)
        ent = (el + r - ab[:, None, None]) * n + el + r - ab[None, :, None]  # [a, b, r]
        diag.extend(sum(e.shape[0] for e in entries) + (ab - 1) * (m + 1))
        entries.append(np.concatenate([ent.reshape(m * m, m), np.tile(pad, (m, 1))], axis=1))
        h_a0 = (el + ab[None, :] - ab[:, None]) * n + el + ab[None, :]  # [a, r]
        rhs.append(np.concatenate([h_a0, pad], axis=1))
        q_cols = [mt + i] + [off + j for j in range(m)]  # z = [y (Mt), 1, 1]: q_0 at Mt + i
        for row in range(el + 1):  # u_row = sum_{j <= min(M, L - row)} q_j
            for j in range(min(m, el - row) + 1):
                r_map[i, row, q_cols[j]] = 1.0
    plan = _PairPlan(
        m_n=m_n, m_m=m_m, length=k - m_n + 1,
        idx=np.concatenate(entries + rhs or [np.empty((0, m_n))]).astype(np.intp).T.copy(),
        diag=np.array(diag, dtype=np.intp), r=r_map.reshape(2 * (k - m_n + 1), mt + 2),
        ridge_n=RIDGE * np.eye(m_n), ridge_m=RIDGE * np.eye(m_m),
    )
    _PAIR_PLANS[k] = plan
    return plan


def pade_pair(
    gram: np.ndarray, coefs: np.ndarray, k: int, rows: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The approximants at a = 1 from coefficients 0..k and 0..k-1 ([L/M], L+M = k and k-1),
    for S scenarios: ``gram`` (S, >= k+1, >= k+1), ``coefs`` (S', N, n) with ``rows`` selecting
    the S scenarios (None: all).

    Each denominator q (q_0 = 1) minimises sum_{r=1..M} ||sum_j q_j c[L+r-j]||^2 over the buses
    of ``gram`` (``capacity.helm`` uses probe buses), one denominator per scenario (a matrix
    Padé approximant): normal equations sum_r G[L+r-i, L+r-j] q_j = 0 (i = 1..M), Jacobi
    scaled with a relative ridge ``RIDGE``. The numerator's value at a = 1 is sum_i u_i c_i
    with u_i = sum_{j <= min(M, L-i)} q_j, so P(1)/Q(1) is one product with the coefficient
    history. Per scenario the arithmetic is exactly that of ``pade_single``."""
    plan = _pair_plan(k)
    n = k + 1
    n_scen = gram.shape[0]
    m_n, m_m = plan.m_n, plan.m_m
    mt = m_n + m_m
    z = np.ones((n_scen, mt + 2), dtype=complex)
    if mt:
        g = np.zeros((n_scen, n * n + 1), dtype=complex)
        g[:, :-1].reshape(n_scen, n, n)[:] = gram[:, :n, :n]
        hv = np.empty((n_scen, plan.idx.shape[1]), dtype=complex)
        chunk = max(1, (1 << 18) // plan.idx.size)  # gathered terms stay in cache
        for lo in range(0, n_scen, chunk):
            hv[lo : lo + chunk] = g[lo : lo + chunk, plan.idx].sum(axis=1)  # in term order
        dm = np.sqrt(np.abs(hv[:, plan.diag].real))
        dm[dm == 0] = 1.0
        b = hv[:, m_n * m_n + m_m * m_m :] / dm
        systems = ((0, m_n, 0, plan.ridge_n), (m_n, m_m, m_n * m_n, plan.ridge_m))
        for off, m, start, ridge in systems:  # (offset in z, M, first row in hv, ridge)
            if m:
                d = dm[:, off : off + m]
                a = hv[:, start : start + m * m].reshape(n_scen, m, m) / (
                    d[:, :, None] * d[:, None, :]
                )
                a += ridge
                z[:, off : off + m] = np.linalg.solve(a, b[:, off : off + m, None])[:, :, 0]
        z[:, :mt] /= -dm
    u = np.ascontiguousarray(np.matmul(plan.r, z.view(np.float64).reshape(n_scen, -1, 2)))
    u = u.view(np.complex128).reshape(n_scen, 2, plan.length)
    c = coefs[:, : plan.length] if rows is None else coefs[rows, : plan.length]
    num = np.matmul(u, c)  # (S, 2, n)
    return num[:, 0] / u[:, 0, :1], num[:, 1] / u[:, 1, :1]


def pade_single(gram: np.ndarray, coefs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``pade_pair`` for one scenario with the same arithmetic and fewer numpy calls (latency
    path): ``gram`` (>= k+1, >= k+1) and ``coefs`` (N, n). The systems are solved by LAPACK
    zgesv directly, as np.linalg.solve does in ``pade_pair`` (bitwise the same results, less
    call overhead); an exactly singular system gives NaN, i.e. no convergence."""
    plan = _pair_plan(k)
    n = k + 1
    m_n, m_m = plan.m_n, plan.m_m
    mt = m_n + m_m
    z = np.ones(mt + 2, dtype=complex)
    if mt:
        g = np.zeros(n * n + 1, dtype=complex)
        g[:-1].reshape(n, n)[:] = gram[:n, :n]
        hv = g[plan.idx].sum(axis=0)  # in term order, as in pade_pair
        dm = np.sqrt(np.abs(hv[plan.diag].real))
        dm[dm == 0] = 1.0
        b = hv[m_n * m_n + m_m * m_m :] / dm
        systems = ((0, m_n, 0, plan.ridge_n), (m_n, m_m, m_n * m_n, plan.ridge_m))
        for off, m, start, ridge in systems:  # (offset in z, M, first row in hv, ridge)
            if m:
                d = dm[off : off + m]
                a = hv[start : start + m * m].reshape(m, m) / (d[:, None] * d[None, :])
                a += ridge
                _, _, y, info = _zgesv(a, b[off : off + m], overwrite_a=True)
                z[off : off + m] = y if info == 0 else np.nan
        z[:mt] /= -dm
    u = np.ascontiguousarray(plan.r @ z.view(np.float64).reshape(-1, 2)).view(np.complex128)
    u = u.reshape(2, plan.length)
    num = u @ coefs[: plan.length]
    return num[0] / u[0, 0], num[1] / u[1, 0]
