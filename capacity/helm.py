"""Holomorphic embedding load flow (HELM), batched over load scenarios.

Embedding (OCM paper, Rao et al. 2021, Eq. 10; Trias 2012), for every PQ node w::

    sum_l Y_wl V_l(a) = a S*_w / V*_w(a*) - a Y_shunt,w V_w(a)

with ``Y`` the series part of the admittance matrix (lines, transformer leakage impedances with
their off-nominal ratio and phase shift) and ``Y_shunt`` the shunt part (line charging,
magnetising branches, shunts); the slack keeps its voltage for every ``a``. At ``a = 0`` the
system is linear (the no-load voltages ``V[0]``); the Maclaurin coefficients of Eq. 11-12 follow
from the recursion

    Y_pp V[n] = conj(S) * conj(W[n-1]) - Y_shunt * V[n-1],   W = 1 / V (series reciprocal),

one sparse LU factorisation of ``Y_pp`` (cached on the feeder) solving all coefficients of all
scenarios as one multi-right-hand-side solve. ``V(1)`` is evaluated by Padé approximants
(Wynn's epsilon algorithm on the partial sums, vectorised over scenarios and buses); a scenario
has converged when the two latest approximants agree within ``tol_pu`` at every bus and the
power mismatch of the result is small. Otherwise (voltage collapse: the approximants do not
settle) it is reported as not converged, with NaN voltages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from capacity.grid import S_BASE_MVA, Feeder

DEFAULT_TOL_PU = 1e-10
"""Default agreement of successive Padé approximants (pu) for convergence."""

DEFAULT_MAX_COEFFICIENTS = 80
"""Default maximum number of series coefficients before a scenario is declared collapsed."""

MISMATCH_TOL_PU = 1e-6
"""Largest power mismatch (pu on S_BASE_MVA, i.e. 1 VA) accepted for a converged scenario."""

_FIRST_CHECK = 6
_CHECK_EVERY = 2
_BLOCK_ELEMENTS = 1 << 17  # scenarios x PQ nodes per block (bounds memory, keeps data in cache)


@dataclass(frozen=True, eq=False)
class HelmResult:
    """Result of ``solve``.

    ``v_pu``: complex bus voltages (S, n_bus) in ``bus_ids`` order, NaN where not converged;
    ``converged``: (S,) bool; ``n_coefficients``: largest number of series coefficients used;
    ``n_coefficients_per_scenario``: (S,) coefficients used per scenario.
    """

    v_pu: np.ndarray
    converged: np.ndarray
    n_coefficients: int
    n_coefficients_per_scenario: np.ndarray
    bus_ids: np.ndarray

    @property
    def vm_pu(self) -> np.ndarray:
        """Voltage magnitudes (S, n_bus), pu."""
        return np.abs(self.v_pu)

    @property
    def va_rad(self) -> np.ndarray:
        """Voltage angles (S, n_bus), rad."""
        return np.angle(self.v_pu)

    @property
    def va_degree(self) -> np.ndarray:
        """Voltage angles (S, n_bus), degrees."""
        return np.angle(self.v_pu, deg=True)


@dataclass(frozen=True, eq=False)
class _HelmModel:
    """Per-feeder precomputation, cached in ``feeder._cache``."""

    n_bus: int
    n_node: int
    n_pq: int
    lu: Any  # scipy SuperLU of Y_pp
    v0_unit: np.ndarray  # (n_pq,) no-load voltages for a slack voltage of 1 pu
    y_shunt_pq: np.ndarray  # (n_pq,)
    pq_bus_cols: np.ndarray | None  # bus column per PQ node when no buses are fused
    aggregate: sp.csr_matrix | None  # (n_bus, n_pq) bus -> PQ node summation when fused
    y_pq_rows: sp.csr_matrix  # (n_pq, n_node) rows of the full Y for the mismatch check
    pq_nodes: np.ndarray
    slack_node: int
    bus_to_node: np.ndarray
    v_slack_pu: complex


def _helm_model(feeder: Feeder) -> _HelmModel:
    model = feeder._cache.get("helm")
    if model is not None:
        return model
    adm = feeder.admittance
    pq = adm.pq_nodes
    ys = adm.y_series.tocsc()
    y_pp = ys[pq][:, pq].tocsc()
    y_ps = ys[pq][:, [adm.slack_node]].toarray().reshape(-1)
    lu = spla.splu(y_pp, permc_spec="COLAMD")
    v0_unit = lu.solve(-y_ps.astype(complex))
    n_pq = pq.shape[0]
    node_of_pq = np.full(adm.n_node, -1, dtype=np.int64)
    node_of_pq[pq] = np.arange(n_pq)
    fused = adm.n_node != feeder.n_bus
    if not fused:
        pq_bus_cols = pq.copy()  # node i == bus position i
        aggregate = None
    else:
        pq_bus_cols = None
        bus_pq = node_of_pq[adm.bus_to_node]
        rows = np.flatnonzero(bus_pq >= 0)
        aggregate = sp.csr_matrix(
            (np.ones(rows.shape[0]), (rows, bus_pq[rows])), shape=(feeder.n_bus, n_pq)
        )
    y_pq_rows = adm.y_bus.tocsr()[pq]
    model = _HelmModel(
        n_bus=feeder.n_bus,
        n_node=adm.n_node,
        n_pq=n_pq,
        lu=lu,
        v0_unit=v0_unit,
        y_shunt_pq=adm.y_shunt[pq].copy(),
        pq_bus_cols=pq_bus_cols,
        aggregate=aggregate,
        y_pq_rows=y_pq_rows,
        pq_nodes=pq,
        slack_node=adm.slack_node,
        bus_to_node=adm.bus_to_node,
        v_slack_pu=adm.v_slack_pu,
    )
    feeder._cache["helm"] = model
    return model


def _as_scenarios(values: Any, name: str, n_bus: int) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n_bus:
        raise ValueError(
            f"{name} must have shape (S, {n_bus}) or ({n_bus},), got {np.shape(values)}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _scenario_arrays(
    feeder: Feeder, p_kw: Any, q_kvar: Any
) -> tuple[np.ndarray, np.ndarray]:
    n = feeder.n_bus
    p = _as_scenarios(feeder.p_kw if p_kw is None else p_kw, "p_kw", n)
    q = _as_scenarios(feeder.q_kvar if q_kvar is None else q_kvar, "q_kvar", n)
    if p.shape[0] != q.shape[0]:
        if p.shape[0] == 1:
            p = np.broadcast_to(p, q.shape)
        elif q.shape[0] == 1:
            q = np.broadcast_to(q, p.shape)
        else:
            raise ValueError(
                f"p_kw has {p.shape[0]} scenarios but q_kvar has {q.shape[0]}"
            )
    return p, q


def _slack_voltages(model: _HelmModel, v_slack_pu: Any, n_scen: int) -> np.ndarray:
    if v_slack_pu is None:
        return np.full(n_scen, model.v_slack_pu, dtype=complex)
    vm = np.asarray(v_slack_pu)
    if np.iscomplexobj(vm):
        raise ValueError("v_slack_pu is the slack voltage magnitude (real), got complex values")
    vm = vm.astype(float)
    if vm.ndim == 0:
        vm = np.full(n_scen, float(vm))
    if vm.shape != (n_scen,):
        raise ValueError(
            f"v_slack_pu must be a scalar or have shape ({n_scen},), got {np.shape(v_slack_pu)}"
        )
    if not np.all(np.isfinite(vm) & (vm > 0)):
        raise ValueError("v_slack_pu must be finite and > 0")
    unit_angle = model.v_slack_pu / abs(model.v_slack_pu)
    return vm * unit_angle


class _Wynn:
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


def _solve_block(
    model: _HelmModel,
    conj_s: np.ndarray,
    v_slack: np.ndarray,
    tol_pu: float,
    max_coefficients: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HELM for one block of scenarios; returns (v_pq (S, n_pq), converged, n_coefficients)."""
    n_scen, n_pq = conj_s.shape
    v_out = np.full((n_scen, n_pq), np.nan + 0j)
    conv = np.zeros(n_scen, dtype=bool)
    n_used = np.full(n_scen, max_coefficients, dtype=np.int64)
    active = np.arange(n_scen)
    lu = model.lu
    y_sh = model.y_shunt_pq

    cap = min(max_coefficients, 32)
    V = np.empty((cap, n_scen, n_pq), dtype=complex)
    W = np.empty((cap, n_scen, n_pq), dtype=complex)
    V[0] = v_slack[:, None] * model.v0_unit[None, :]
    W[0] = 1.0 / V[0]
    psum = V[0].copy()
    wynn = _Wynn()
    pending = [psum.copy()]
    cs = conj_s
    n = 0
    target = _FIRST_CHECK
    while True:
        while n + 1 < min(target, max_coefficients):
            n += 1
            if n >= cap:
                cap = min(2 * cap, max_coefficients)
                V = np.concatenate([V, np.empty((cap - V.shape[0], *V.shape[1:]), complex)])
                W = np.concatenate([W, np.empty((cap - W.shape[0], *W.shape[1:]), complex)])
            rhs = cs * np.conj(W[n - 1])
            rhs -= y_sh * V[n - 1]
            V[n] = lu.solve(rhs.T).T
            conv_sum = np.einsum("kij,kij->ij", W[:n], V[n:0:-1])
            W[n] = -conv_sum * W[0]
            psum += V[n]
            pending.append(psum.copy())
        wynn.extend(np.stack(pending))
        pending = []
        a_n, a_m = wynn.latest()
        with np.errstate(invalid="ignore"):
            err = np.max(np.abs(a_n - a_m), axis=1)
        done = np.isfinite(err) & (err <= tol_pu)
        at_limit = n + 1 >= max_coefficients
        if done.any():
            idx = active[done]
            v_out[idx] = a_n[done]
            conv[idx] = True
            n_used[idx] = n + 1
        if at_limit or done.all():
            break
        if done.any():
            keep = ~done
            active = active[keep]
            V = V[:, keep]
            W = W[:, keep]
            psum = psum[keep]
            cs = cs[keep]
            wynn.keep(keep)
        target = n + 1 + _CHECK_EVERY
    return v_out, conv, n_used


def solve(
    feeder: Feeder,
    p_kw: Any = None,
    q_kvar: Any = None,
    *,
    v_slack_pu: Any = None,
    tol_pu: float = DEFAULT_TOL_PU,
    max_coefficients: int = DEFAULT_MAX_COEFFICIENTS,
) -> HelmResult:
    """Solve the load flow of ``feeder`` for S load scenarios (HELM, OCM paper Eq. 10-13).

    ``p_kw`` / ``q_kvar``: net consumption per bus (kW / kvar, injection negative), shape
    (S, n_bus) or (n_bus,) in ``feeder.bus_ids`` order; ``None`` takes the feeder's base case
    (one of them may have one row, it is then used for every scenario). ``v_slack_pu``: slack
    voltage magnitude, scalar or (S,) (with single-row loads, S comes from it); default the
    feeder's slack (its angle is kept).
    ``tol_pu``: agreement of successive Padé approximants for convergence;
    ``max_coefficients``: series length after which a scenario counts as collapsed.
    """
    if not (np.isfinite(tol_pu) and tol_pu > 0):
        raise ValueError(f"tol_pu must be > 0, got {tol_pu}")
    if int(max_coefficients) != max_coefficients or max_coefficients < 4:
        raise ValueError(f"max_coefficients must be an integer >= 4, got {max_coefficients}")
    max_coefficients = int(max_coefficients)
    model = _helm_model(feeder)
    p, q = _scenario_arrays(feeder, p_kw, q_kvar)
    n_scen = p.shape[0]
    if n_scen == 1 and v_slack_pu is not None and np.ndim(v_slack_pu) == 1:
        n_scen = int(np.shape(v_slack_pu)[0])  # one load case, several slack voltages
        p = np.broadcast_to(p, (n_scen, p.shape[1]))
        q = np.broadcast_to(q, (n_scen, q.shape[1]))
    v_slack = _slack_voltages(model, v_slack_pu, n_scen)
    scale = -1e-3 / S_BASE_MVA
    if model.aggregate is None:
        cols = model.pq_bus_cols
        conj_s = scale * (p[:, cols] - 1j * q[:, cols])
    else:
        conj_s = scale * ((p @ model.aggregate) - 1j * (q @ model.aggregate))
    conj_s = np.ascontiguousarray(conj_s, dtype=complex)

    n_pq = model.n_pq
    v_pq = np.empty((n_scen, n_pq), dtype=complex)
    conv = np.empty(n_scen, dtype=bool)
    n_used = np.empty(n_scen, dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // max(n_pq, 1))
    for start in range(0, n_scen, block):  # blocks of scenarios (vectorised within a block)
        sl = slice(start, min(start + block, n_scen))
        v_pq[sl], conv[sl], n_used[sl] = _solve_block(
            model, conj_s[sl], v_slack[sl], float(tol_pu), max_coefficients
        )

    v_node = np.empty((n_scen, model.n_node), dtype=complex)
    v_node[:, model.slack_node] = v_slack
    v_node[:, model.pq_nodes] = v_pq
    if conv.any():
        # mismatch check: S_calc = V conj(Y V) must equal the specified injections
        ok = np.flatnonzero(conv)
        v_ok = v_node[ok]
        current = (model.y_pq_rows @ v_ok.T).T
        s_calc = v_ok[:, model.pq_nodes] * np.conj(current)
        mismatch = np.max(np.abs(s_calc - np.conj(conj_s[ok])), axis=1)
        bad = ok[~(mismatch <= MISMATCH_TOL_PU)]
        conv[bad] = False
    v_node[~conv] = np.nan + 0j
    v_bus = v_node[:, model.bus_to_node]
    return HelmResult(
        v_pu=v_bus,
        converged=conv,
        n_coefficients=int(n_used.max()) if n_scen else 0,
        n_coefficients_per_scenario=n_used,
        bus_ids=feeder.bus_ids,
    )
