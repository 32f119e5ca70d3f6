"""Holomorphic embedding load flow (HELM), batched over load scenarios.

Embedding (OCM paper, Rao et al. 2021, Eq. 10; Trias 2012), for every PQ node w::

    sum_l Y_wl V_l(a) = a S*_w / V*_w(a*) - a Y_shunt,w V_w(a)

with ``Y`` the series part of the admittance matrix (lines, transformer leakage impedances with
their off-nominal ratio and phase shift, so phase shifters stay in the series part) and
``Y_shunt`` the shunt part (line charging, magnetising branches, shunts); the slack keeps its
voltage for every ``a``. At ``a = 0`` the system is linear (the no-load voltages ``V[0]``); the
Maclaurin coefficients of Eq. 11-12 follow from the recursion

    Y_pp V[n] = conj(S) * conj(W[n-1]) - Y_shunt * V[n-1],   W = 1 / V (series reciprocal).

Linear algebra: ``Y_pp`` is factorised once per feeder (``scipy.sparse.linalg.splu`` with a
symmetric-pattern ordering, cached on the feeder). For feeders up to ``_DENSE_MAX_NODES`` PQ
nodes the factorisation's inverse is formed once (``lu.solve(I)``) and each coefficient of all
scenarios is one BLAS product; larger feeders use SuperLU's multi-right-hand-side solve, and
single solves of feeders above ``_SINGLE_DENSE_MAX_NODES`` nodes SuperLU's triangular solves.
Nothing is refactorised per coefficient or per scenario.

``V(1)`` is evaluated by Padé approximants: per scenario one denominator common to all buses
(a matrix/vector Padé approximant [L/M], L = M or M + 1, whose denominator minimises the
Padé conditions' residual in least squares over up to ``_MAX_PROBE`` probe buses, the
electrically farthest from the slack, from the Gram matrix of their coefficients),
vectorised over buses and scenarios. A scenario has converged when its two latest
approximants ([L/M] from N and from N - 1 coefficients) agree within ``tol_pu`` at every bus
and the power mismatch of the result is below ``MISMATCH_TOL_PU``. Before declaring
a collapse at ``max_coefficients``, the scalar per-bus Padé approximants (Wynn's epsilon
algorithm) are tried as well. Scenarios without an operable solution (voltage collapse: the
approximants do not settle) are reported as not converged, with NaN voltages.

Checks are scheduled per scenario (first check from the coefficients' decay, later ones by
extrapolating the approximants' disagreement), so a scenario gives the same result alone or in
any batch. Scenarios are processed in blocks of about ``_BLOCK_ELEMENTS`` (scenario x node)
values, vectorised within a block; converged scenarios are never checked again and leave the
block's arrays once half of them have converged. A single scenario takes a latency path with
the same series, schedule and tests on 1-D arrays (``_solve_one``).

Results also give the line and transformer loadings of the solved voltages
(``HelmResult.line_loading_pct``, ``trafo_loading_pct``; ``capacity.loading``), computed on
first access.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from capacity.grid import S_BASE_MVA, Feeder
from capacity.loading import BranchLoading, branch_loading
from capacity.pade import Wynn, pade_pair, pade_single

DEFAULT_TOL_PU = 1e-10
"""Default agreement of successive Padé approximants (pu) for convergence."""

DEFAULT_MAX_COEFFICIENTS = 80
"""Default maximum number of series coefficients before a scenario is declared collapsed."""

MISMATCH_TOL_PU = 1e-6
"""Largest power mismatch (pu on S_BASE_MVA, i.e. 1 VA) accepted for a converged scenario."""

_FIRST_CHECK = 6
_FIRST_FACTOR = 2.0  # first check at this multiple of the coefficients' predicted need
_CHECK_EVERY = 2
_DENSE_MAX_NODES = 1500  # up to this size the LU's inverse is applied as a dense matrix (BLAS)
_SINGLE_DENSE_MAX_NODES = 160  # single solves of larger feeders use the sparse LU directly
_MAX_PLANS = 32  # cached plans (sets of loaded nodes) per feeder
_MAX_SKIP = 6  # at most this many coefficients between two checks of a scenario
_MAX_PROBE = 32
_BLOCK_ELEMENTS = 1 << 13  # scenarios x PQ nodes per block (keeps the coefficients in cache)


_BLAS_LIBS: list[Any] | None = None


@contextmanager
def _single_thread_blas() -> Iterator[None]:
    """Run the small BLAS products of HELM single-threaded, then restore the thread count.

    Multi-threaded OpenBLAS on matrices of a few hundred rows costs far more in thread
    synchronisation than it saves (x1000 on a loaded 2-core machine). Uses threadpoolctl
    when installed; costs about 2 microseconds per call."""
    global _BLAS_LIBS
    if _BLAS_LIBS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_LIBS = [
                lc for lc in ThreadpoolController().lib_controllers if lc.user_api == "blas"
            ]
        except Exception:  # threadpoolctl missing or unable to inspect: leave BLAS alone
            _BLAS_LIBS = []
    saved = [(lc, lc.get_num_threads()) for lc in _BLAS_LIBS]
    for lc, n in saved:
        if n != 1:
            lc.set_num_threads(1)
    try:
        yield
    finally:
        for lc, n in saved:
            if n != 1:
                lc.set_num_threads(n)


@dataclass(frozen=True, eq=False)
class HelmResult:
    """Result of ``solve``.

    ``v_pu``: complex bus voltages (S, n_bus) in ``bus_ids`` order, NaN where not converged;
    ``converged``: (S,) bool; ``n_coefficients``: largest number of series coefficients used;
    ``n_coefficients_per_scenario``: (S,) coefficients used per scenario. Branch loadings
    (``line_loading_pct``, ``trafo_loading_pct``, as pandapower's ``res_line`` /
    ``res_trafo.loading_percent``) are computed from ``v_pu`` on first access.
    """

    v_pu: np.ndarray
    converged: np.ndarray
    n_coefficients: int
    n_coefficients_per_scenario: np.ndarray
    bus_ids: np.ndarray
    branches: BranchLoading | None = field(default=None, repr=False)

    @cached_property
    def branch_loading_pct(self) -> np.ndarray:
        """Loading (S, n_line + n_trafo), percent: the lines, then the transformers (NaN for
        unrated lines and scenarios without a solution)."""
        if self.branches is None:
            raise ValueError("this result carries no branch model (no loadings)")
        return self.branches.loading_pct(self.v_pu)

    @property
    def line_loading_pct(self) -> np.ndarray:
        """Line loading (S, n_line) in ``feeder.line_ids`` order, percent of ``max_i_ka * df *
        parallel`` (pandapower's ``res_line.loading_percent``)."""
        return self.branch_loading_pct[:, : self.branches.n_line]

    @property
    def trafo_loading_pct(self) -> np.ndarray:
        """Transformer loading (S, n_trafo) in ``feeder.trafo_ids`` order, percent of
        ``sn_mva * df * parallel`` by current (pandapower's ``res_trafo.loading_percent``)."""
        return self.branch_loading_pct[:, self.branches.n_line :]

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
    """Per-feeder precomputation, cached in ``feeder._cache`` (built once per feeder)."""

    n_bus: int
    n_node: int
    n_pq: int
    lu: Any  # scipy SuperLU of Y_pp (series part, PQ rows and columns): the one factorisation
    z_t: np.ndarray | None  # (n_pq, n_pq) transpose of Y_pp^-1 from that LU (dense path)
    v0_unit: np.ndarray  # (n_pq,) no-load voltages V[0] for a slack voltage of 1 pu
    y_shunt_pq: np.ndarray  # (n_pq,)
    pq_bus_cols: np.ndarray | None  # bus column per PQ node when no buses are fused
    aggregate: sp.csr_matrix | None  # (n_bus, n_pq) bus -> PQ node summation when fused
    agg_rows: np.ndarray | None  # positions of the buses on PQ nodes (fused feeders)
    agg_pq: np.ndarray | None  # their PQ node (single-scenario summation with bincount)
    y_pq_rows: sp.csr_matrix  # (n_pq, n_node) rows of the full Y for the mismatch check
    y_rows_starts: np.ndarray | None  # CSR row starts of y_pq_rows (None: a row is empty)
    pq_nodes: np.ndarray
    slack_node: int
    bus_to_node: np.ndarray
    v_slack_pu: complex
    probe: np.ndarray  # PQ nodes whose coefficients define the common Padé denominator
    plans: dict[bytes, _Plan]


@dataclass(frozen=True, eq=False)
class _Plan:
    """How one coefficient step is computed for a given set of loaded PQ nodes.

    PQ nodes are reordered as [loaded, the rest]. Dense path: with ``i_load = conj(S) *
    conj(W[n-1])`` at the loaded nodes, ``V[n] = [i_load, V[n-1]] @ m`` where ``m`` stacks
    Y_pp^-1 (loaded columns) and -Y_pp^-1 diag(Y_shunt), both from the cached LU. Sparse path
    (large feeders, and single solves of feeders above ``_SINGLE_DENSE_MAX_NODES`` nodes):
    SuperLU's solve of the same right-hand side (``to_pq`` maps plan order to PQ order).
    """

    order: np.ndarray  # PQ node positions in plan order
    n_load: int
    m: np.ndarray | None  # (n_load + n_pq, n_pq)
    to_pq: np.ndarray | None  # plan order -> PQ order, when single solves use the sparse LU
    zt: np.ndarray | None  # (n_pq, n_pq) Y_pp^-1 transposed, plan order
    probe: np.ndarray  # plan-order positions of the feeder's probe nodes (Padé denominator)
    nodes: np.ndarray  # node index of each PQ node in plan order
    y_sh: np.ndarray  # (n_pq,) plan order
    v0_unit: np.ndarray  # (n_pq,) plan order

    def step(self, model: _HelmModel, x: np.ndarray, out: np.ndarray) -> None:
        """V[n] (into ``out``) from x = [i_load, V[n-1]] (S, n_load + n_pq), plan order."""
        if self.m is not None:
            np.matmul(x, self.m, out=out)
            return
        nl = self.n_load
        rhs = -self.y_sh * x[:, nl:]
        rhs[:, :nl] += x[:, :nl]
        inv = np.empty_like(rhs)
        inv[:, self.order] = rhs
        out[:] = model.lu.solve(inv.T).T[:, self.order]


def _helm_model(feeder: Feeder) -> _HelmModel:
    model = feeder._cache.get("helm")
    if model is not None:
        return model
    adm = feeder.admittance
    pq = adm.pq_nodes
    ys = adm.y_series.tocsc()
    y_pp = ys[pq][:, pq].tocsc()
    y_ps = ys[pq][:, [adm.slack_node]].toarray().reshape(-1)
    # symmetric-pattern ordering: SuperLU keeps the diagonal pivots of the (diagonally
    # dominant) Y_pp; single-RHS solves are about 40 % faster than with COLAMD
    lu = spla.splu(y_pp, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    v0_unit = lu.solve(-y_ps.astype(complex))
    n_pq = pq.shape[0]
    node_of_pq = np.full(adm.n_node, -1, dtype=np.int64)
    node_of_pq[pq] = np.arange(n_pq)
    rows = bus_pq = None
    if adm.n_node == feeder.n_bus:
        pq_bus_cols: np.ndarray | None = pq.copy()  # node i == bus position i
        aggregate = None
    else:
        pq_bus_cols = None
        bus_pq = node_of_pq[adm.bus_to_node]
        rows = np.flatnonzero(bus_pq >= 0)
        bus_pq = bus_pq[rows]
        aggregate = sp.csr_matrix(
            (np.ones(rows.shape[0]), (rows, bus_pq)), shape=(feeder.n_bus, n_pq)
        )
    y_pq_rows = adm.y_bus.tocsr()[pq]
    y_pq_rows.sort_indices()
    starts = y_pq_rows.indptr[:-1].copy()
    z_t = None
    if n_pq <= _DENSE_MAX_NODES:
        z_t = np.ascontiguousarray(lu.solve(np.eye(n_pq, dtype=complex)).T)
    model = _HelmModel(
        n_bus=feeder.n_bus,
        n_node=adm.n_node,
        n_pq=n_pq,
        lu=lu,
        z_t=z_t,
        v0_unit=v0_unit,
        y_shunt_pq=adm.y_shunt[pq].copy(),
        pq_bus_cols=pq_bus_cols,
        aggregate=aggregate,
        agg_rows=rows,
        agg_pq=bus_pq,
        y_pq_rows=y_pq_rows,
        y_rows_starts=starts if np.all(np.diff(y_pq_rows.indptr) > 0) else None,
        pq_nodes=pq,
        slack_node=adm.slack_node,
        bus_to_node=adm.bus_to_node,
        v_slack_pu=adm.v_slack_pu,
        probe=_probe_nodes(lu, n_pq, z_t),
        plans={},
    )
    feeder._cache["helm"] = model
    return model


def _probe_nodes(lu: Any, n_pq: int, z_t: np.ndarray | None) -> np.ndarray:
    """At most ``_MAX_PROBE`` PQ nodes, electrically farthest from the slack (largest |Z_ii|):
    the buses whose series coefficients define the common Padé denominator."""
    if n_pq <= _MAX_PROBE:
        return np.arange(n_pq)
    if z_t is not None:
        z_diag = np.abs(np.diagonal(z_t))
    else:
        z_diag = np.abs(lu.solve(np.eye(n_pq, dtype=complex)).diagonal())
    return np.sort(np.argsort(-z_diag, kind="stable")[:_MAX_PROBE])


def _plan(model: _HelmModel, loaded_mask: np.ndarray) -> _Plan:
    """The (cached) plan for this set of loaded PQ nodes."""
    key = loaded_mask.tobytes()
    plan = model.plans.get(key)
    if plan is not None:
        return plan
    loaded = np.flatnonzero(loaded_mask)
    order = np.concatenate([loaded, np.flatnonzero(~loaded_mask)])
    n_load = loaded.shape[0]
    y_sh = model.y_shunt_pq[order]
    m = zt = None
    if model.z_t is not None:
        zt = np.ascontiguousarray(model.z_t[np.ix_(order, order)])  # zt[i, j] = Z[o_j, o_i]
        # [i_load, V[n-1]] @ m = Z (i_load - Y_shunt V[n-1])  (row-vector form)
        m = np.ascontiguousarray(np.vstack([zt[:n_load], -y_sh[:, None] * zt]))
    pos_in_plan = np.empty_like(order)
    pos_in_plan[order] = np.arange(order.shape[0])
    to_pq = None
    if m is None or model.n_pq > _SINGLE_DENSE_MAX_NODES:  # single solves use the sparse LU
        to_pq = np.argsort(order)
    plan = _Plan(
        order=order, n_load=n_load, m=m, to_pq=to_pq, zt=zt,
        probe=np.sort(pos_in_plan[model.probe]),
        nodes=model.pq_nodes[order],
        y_sh=y_sh, v0_unit=model.v0_unit[order],
    )
    if len(model.plans) >= _MAX_PLANS:
        model.plans.pop(next(iter(model.plans)))
    model.plans[key] = plan
    return plan


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


def _next_check(
    n_coef: int,
    err: np.ndarray,
    prev_err: np.ndarray,
    prev_n: np.ndarray,
    rate0: np.ndarray,
    tol_pu: float,
) -> np.ndarray:
    """Coefficient count of each scenario's next convergence check (deterministic per
    scenario): extrapolates the geometric decrease of the approximants' disagreement, from
    the last two checks or, after the first, from the predicted rate ``rate0``."""
    nxt = np.full(err.shape, n_coef + _CHECK_EVERY, dtype=np.int64)
    rate = np.where(
        np.isfinite(prev_err), np.log(err / prev_err) / (n_coef - prev_n), rate0
    )  # log of the decrease per coefficient
    need = np.log(tol_pu / err) / rate
    ok = np.isfinite(need) & (rate < -0.05) & (err > tol_pu)
    nxt[ok] = n_coef + np.clip(np.ceil(need[ok]).astype(np.int64), 1, _MAX_SKIP)
    return nxt


def _first_check(
    coefs: np.ndarray, tol_pu: float, max_coefficients: int
) -> tuple[np.ndarray, np.ndarray]:
    """First convergence check per scenario from the decay of coefficients 1, k-1, k.

    The ratio of the last two estimates the radius of convergence alpha_c (nearest
    singularity); diagonal Padé approximants of a function with a branch point at alpha_c
    gain about log(R) per coefficient at a = 1, R = (sqrt(alpha_c) + sqrt(alpha_c - 1))^2.
    Measured on the benchmark feeders, HELM needs 1.8x to 4x the resulting estimate (the
    earliest passing check of the bench's load scenarios at 1.85x to 2.45x, most at 2.1x),
    so the first check comes at ``_FIRST_FACTOR`` = 2.0x (never before ``_FIRST_CHECK``); a
    check that fails costs a Padé solve, one that comes late costs coefficients. Also returns
    the expected log decrease of the approximants' disagreement per coefficient (log(R) / 1.9,
    negative), used to place the second check.
    """
    mag = np.max(np.abs(coefs), axis=2)  # (S, 3)
    alpha_c = mag[:, 1] / mag[:, 2]
    log_r = 2.0 * np.log(np.sqrt(alpha_c) + np.sqrt(alpha_c - 1.0))
    predicted = np.log(mag[:, 0] / tol_pu) / log_r
    first = np.full(coefs.shape[0], _FIRST_CHECK, dtype=np.int64)
    rate = np.full(coefs.shape[0], np.nan)
    ok = np.isfinite(predicted) & (alpha_c > 1.0) & (log_r > 0)
    first[ok] = np.clip(np.floor(_FIRST_FACTOR * predicted[ok]), _FIRST_CHECK, max_coefficients)
    rate[ok] = -log_r[ok] / 1.9
    return first, rate


@dataclass(eq=False)
class _BlockSeries:
    """The running series of one block of scenarios (the state of ``_solve_block``).

    ``hist[:, n] = [i_load(n), V[n]]`` with i_load(n) = conj(S) * conj(W[n]) at the loaded
    nodes, ``w`` the reciprocal series W = 1/V there, ``pc`` the coefficients at the probe
    nodes and ``gram[s, a, b] = <V[a], V[b]>_probe`` (for the common Padé denominator); per
    scenario the schedule of its checks. Rows are the block's active scenarios (``active``).
    """

    nl: int
    cap: int
    hist: np.ndarray
    w: np.ndarray
    pc: np.ndarray
    gram: np.ndarray
    cs: np.ndarray
    neg_w0: np.ndarray
    neg_y_sh: np.ndarray
    j_buf: np.ndarray  # current injections of the step
    next_chk: np.ndarray
    rate0: np.ndarray
    prev_err: np.ndarray
    prev_n: np.ndarray
    done: np.ndarray  # converged rows not yet dropped from the active set
    active: np.ndarray

    @classmethod
    def start(
        cls, plan: _Plan, conj_s: np.ndarray, v_slack: np.ndarray, n_pq: int, max_coef: int
    ) -> _BlockSeries:
        """The series' first coefficient V[0] (no-load voltages) and its reciprocal."""
        n_scen = conj_s.shape[0]
        nl = plan.n_load
        cap = min(max_coef, 24)
        hist = np.empty((n_scen, cap, nl + n_pq), dtype=complex)
        v0 = hist[:, 0, nl:]
        np.multiply(v_slack[:, None], plan.v0_unit[None, :], out=v0)
        w = np.empty((n_scen, cap, nl), dtype=complex)
        np.divide(1.0, v0[:, :nl], out=w[:, 0])
        neg_w0 = -w[:, 0]
        np.conjugate(w[:, 0], out=hist[:, 0, :nl])
        hist[:, 0, :nl] *= conj_s
        pc = np.empty((n_scen, cap, plan.probe.shape[0]), dtype=complex)
        pc[:, 0] = v0[:, plan.probe]
        gram = np.zeros((n_scen, cap, cap), dtype=complex)
        gram[:, 0, 0] = np.einsum("sl,sl->s", pc[:, 0].conj(), pc[:, 0])
        return cls(
            nl=nl, cap=cap, hist=hist, w=w, pc=pc, gram=gram, cs=conj_s, neg_w0=neg_w0,
            neg_y_sh=-plan.y_sh, j_buf=np.empty((n_scen, n_pq), dtype=complex),
            next_chk=np.full(n_scen, _FIRST_CHECK, dtype=np.int64),
            rate0=np.full(n_scen, np.nan), prev_err=np.full(n_scen, np.inf),
            prev_n=np.zeros(n_scen, dtype=np.int64), done=np.zeros(n_scen, dtype=bool),
            active=np.arange(n_scen),
        )

    def grow(self, max_coef: int) -> None:
        """Room for more coefficients (doubling, at most ``max_coef``)."""
        grow = min(2 * self.cap, max_coef) - self.cap
        self.cap += grow
        self.hist = np.pad(self.hist, [(0, 0), (0, grow), (0, 0)])
        self.pc = np.pad(self.pc, [(0, 0), (0, grow), (0, 0)])
        self.w = np.pad(self.w, [(0, 0), (0, grow), (0, 0)])
        self.gram = np.pad(self.gram, [(0, 0), (0, grow), (0, grow)])

    def advance(self, model: _HelmModel, plan: _Plan, k: int) -> None:
        """Coefficient k: V[k] (Eq. 10's recursion), its Gram row and W[k] at loaded nodes."""
        nl, hist = self.nl, self.hist
        v_k = hist[:, k, nl:]
        if plan.zt is not None:  # V[k] = (i_load - Y_shunt V[k-1]) Z^T, one BLAS product
            np.multiply(hist[:, k - 1, nl:], self.neg_y_sh, out=self.j_buf)
            self.j_buf[:, :nl] += hist[:, k - 1, :nl]
            np.matmul(self.j_buf, plan.zt, out=v_k)
        else:
            plan.step(model, hist[:, k - 1], out=v_k)
        pc = self.pc
        pc[:, k] = v_k[:, plan.probe]
        g_row = np.matmul(pc[:, : k + 1], pc[:, k].conj()[:, :, None])[:, :, 0]
        self.gram[:, k, : k + 1] = g_row
        np.conjugate(g_row, out=self.gram[:, : k + 1, k])
        if nl:
            acc = np.einsum("sjl,sjl->sl", self.w[:, :k], hist[:, k:0:-1, nl : 2 * nl])
            np.multiply(acc, self.neg_w0, out=self.w[:, k])
            np.conjugate(self.w[:, k], out=hist[:, k, :nl])
            hist[:, k, :nl] *= self.cs

    def approximants(
        self, due: np.ndarray, k: int, tol_pu: float, at_limit: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padé approximants of the ``due`` rows from k + 1 coefficients: (V(1) (D, n_pq),
        disagreement of the two latest (D,), converged (D,)). At the series limit the scalar
        per-node Padé (Wynn's epsilon) is the last resort before declaring collapse."""
        rows = None if due.size == self.active.size else due
        g_due = self.gram if rows is None else self.gram[rows]
        coefs = self.hist[:, :, self.nl :]
        a_n, a_m = pade_pair(g_due, coefs, k, rows)
        err = np.max(np.abs(a_n - a_m), axis=1)
        ok = np.isfinite(err) & (err <= tol_pu)
        if at_limit and not ok.all():
            rest = np.flatnonzero(~ok)
            wynn = Wynn()
            wynn.extend(np.moveaxis(np.cumsum(coefs[due[rest], : k + 1], axis=1), 1, 0))
            b_n, b_m = wynn.latest()
            err_w = np.max(np.abs(b_n - b_m), axis=1)
            ok_w = np.isfinite(err_w) & (err_w <= tol_pu)
            a_n[rest[ok_w]] = b_n[ok_w]
            ok[rest[ok_w]] = True
        return a_n, err, ok

    def reschedule(
        self, due: np.ndarray, ok: np.ndarray, err: np.ndarray, n_coef: int, tol_pu: float
    ) -> None:
        """Next check of the due rows that did not converge."""
        pending = due[~ok]
        self.next_chk[pending] = _next_check(
            n_coef, err[~ok], self.prev_err[pending], self.prev_n[pending], self.rate0[pending],
            tol_pu,
        )
        self.prev_err[pending] = err[~ok]
        self.prev_n[pending] = n_coef

    def retire(self, rows: np.ndarray) -> bool:
        """Mark converged rows; drop them once they are half the block. True if all are done."""
        self.done[rows] = True
        self.next_chk[rows] = np.iinfo(np.int64).max  # never due again
        n_done = int(np.count_nonzero(self.done))
        if n_done == self.active.size:
            return True
        if 2 * n_done >= self.active.size:
            keep = ~self.done
            self.active = self.active[keep]
            self.j_buf = self.j_buf[: self.active.size]
            for name in (
                "hist", "pc", "w", "gram", "cs", "neg_w0", "next_chk", "rate0", "prev_err",
                "prev_n", "done",
            ):
                setattr(self, name, getattr(self, name)[keep])
        return False


def _solve_block(
    model: _HelmModel,
    plan: _Plan,
    conj_s: np.ndarray,
    v_slack: np.ndarray,
    tol_pu: float,
    max_coefficients: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HELM for one block of scenarios (nodes in plan order, ``conj_s`` (S, n_load)).

    Returns (v_pq (S, n_pq) in plan order, converged, coefficients used). Per coefficient: the
    step of Eq. 10's recursion (one product with the factorisation), the series reciprocal
    W = 1/V at the loaded nodes (a convolution) and a new row of the Gram matrix of the
    coefficients (for the common Padé denominator). At a scenario's check the
    two latest approximants are compared; converged scenarios leave the active set.
    """
    n_scen = conj_s.shape[0]
    v_out = np.full((n_scen, model.n_pq), np.nan + 0j)
    conv = np.zeros(n_scen, dtype=bool)
    n_used = np.full(n_scen, max_coefficients, dtype=np.int64)
    st = _BlockSeries.start(plan, conj_s, v_slack, model.n_pq, max_coefficients)
    k = 0
    while True:
        k += 1
        if k >= st.cap:
            st.grow(max_coefficients)
        st.advance(model, plan, k)
        n_coef = k + 1
        if k == _FIRST_CHECK - 1:
            st.next_chk, st.rate0 = _first_check(
                st.hist[:, [1, k - 1, k], st.nl :], tol_pu, max_coefficients
            )
        at_limit = n_coef >= max_coefficients
        if at_limit:
            due = np.flatnonzero(~st.done)
        else:
            due = np.flatnonzero(st.next_chk <= n_coef)
            if due.size == 0:
                continue
        a_n, err, ok = st.approximants(due, k, tol_pu, at_limit)
        if ok.any():
            idx = st.active[due[ok]]
            v_out[idx] = a_n[ok]
            conv[idx] = True
            n_used[idx] = n_coef
        if at_limit:
            break
        st.reschedule(due, ok, err, n_coef, tol_pu)
        if ok.any() and st.retire(due[ok]):
            break
    return v_out, conv, n_used


def _first_check_single(
    hist: np.ndarray, nl: int, k: int, tol_pu: float, max_coefficients: int
) -> tuple[int, float]:
    """``_first_check`` for one scenario with numpy scalars (same IEEE semantics): the first
    check's coefficient count and the predicted rate (``_FIRST_CHECK``, NaN if unpredictable)."""
    mag = np.abs(hist[[1, k - 1, k], nl:]).max(axis=1)
    alpha_c = mag[1] / mag[2]
    log_r = 2.0 * np.log(np.sqrt(alpha_c) + np.sqrt(alpha_c - 1.0))
    predicted = np.log(mag[0] / tol_pu) / log_r
    if np.isfinite(predicted) and alpha_c > 1.0 and log_r > 0:
        first = np.floor(_FIRST_FACTOR * predicted)
        return int(min(max(first, _FIRST_CHECK), max_coefficients)), float(-log_r / 1.9)
    return _FIRST_CHECK, np.nan


def _next_check_single(
    n_coef: int, err: float, prev_err: float, prev_n: int, rate0: float, tol_pu: float
) -> int:
    """``_next_check`` for one scenario, in scalar arithmetic."""
    rate = (
        math.log(err / prev_err) / (n_coef - prev_n)
        if math.isfinite(prev_err) and prev_err > 0 and err > 0
        else rate0
    )
    step = _CHECK_EVERY
    if err > tol_pu and math.isfinite(rate) and rate < -0.05 and math.isfinite(err):
        step = min(max(math.ceil(math.log(tol_pu / err) / rate), 1), _MAX_SKIP)
    return n_coef + step


def _wynn_single(c: np.ndarray, tol_pu: float) -> np.ndarray | None:
    """Scalar per-node Padé (Wynn's epsilon) of the coefficients ``c`` (N, n_pq): V(1) if its
    two latest approximants agree within ``tol_pu``, else None (collapse)."""
    wynn = Wynn()
    wynn.extend(np.cumsum(c, axis=0)[:, None, :])
    b_n, b_m = wynn.latest()
    if float(np.max(np.abs(b_n - b_m))) <= tol_pu:
        return b_n[0]
    return None


def _solve_single(
    model: _HelmModel,
    plan: _Plan,
    conj_s: np.ndarray,
    v_slack: complex,
    tol_pu: float,
    max_coefficients: int,
) -> tuple[np.ndarray, bool, int]:
    """``_solve_block`` for one scenario with fewer, smaller numpy calls (the same series,
    check schedule and results to rounding): latency path of single solves.

    The reciprocal series is carried as the load currents themselves: with i_load[n] =
    conj(S) conj(W[n]), W V = 1 gives i_load[k] = -conj(W[0]) sum_{j<k} i_load[j]
    conj(V[k-j]) at the loaded nodes, one conjugation and one einsum per coefficient."""
    nl = plan.n_load
    cap = min(max_coefficients, 32)
    hist = np.empty((cap, nl + model.n_pq), dtype=complex)  # [i_load(n), V[n]]
    np.multiply(plan.v0_unit, v_slack, out=hist[0, nl:])
    conj_v = np.empty((cap, nl), dtype=complex)  # conj(V[n]) at the loaded nodes
    np.conjugate(hist[0, nl : 2 * nl], out=conj_v[0])
    conj_w0 = 1.0 / conj_v[0]
    np.multiply(conj_w0, conj_s, out=hist[0, :nl])
    neg_conj_w0 = -conj_w0
    m, lu, to_pq = plan.m, model.lu, plan.to_pq
    use_lu = to_pq is not None
    if use_lu:  # SuperLU's triangular solves beat the dense product for one right-hand side
        neg_y_sh = -plan.y_sh
        j_buf = np.empty(model.n_pq, dtype=complex)
    next_chk, rate0, prev_err, prev_n = _FIRST_CHECK, np.nan, np.inf, 0
    k = 0
    while True:
        k += 1
        if k >= cap:
            grow = min(2 * cap, max_coefficients) - cap
            cap += grow
            hist = np.pad(hist, [(0, grow), (0, 0)])
            conj_v = np.pad(conj_v, [(0, grow), (0, 0)])
        if use_lu:
            np.multiply(hist[k - 1, nl:], neg_y_sh, out=j_buf)
            j_buf[:nl] += hist[k - 1, :nl]
            hist[k, nl:] = lu.solve(j_buf[to_pq])[plan.order]
        else:
            np.matmul(hist[k - 1], m, out=hist[k, nl:])
        if nl:
            np.conjugate(hist[k, nl : 2 * nl], out=conj_v[k])
            np.einsum(
                "jl,jl,l->l", hist[:k, :nl], conj_v[k:0:-1], neg_conj_w0, out=hist[k, :nl]
            )
        n_coef = k + 1
        if k == _FIRST_CHECK - 1:
            next_chk, rate0 = _first_check_single(hist, nl, k, tol_pu, max_coefficients)
        at_limit = n_coef >= max_coefficients
        if n_coef < next_chk and not at_limit:
            continue
        c = hist[: k + 1, nl:]
        cp = c[:, plan.probe]
        a_n, a_m = pade_single(cp.conj() @ cp.T, c, k)
        err = float(abs(a_n - a_m).max())
        if err <= tol_pu:  # False for NaN
            return a_n, True, n_coef
        if at_limit:
            v = _wynn_single(c, tol_pu)
            if v is not None:
                return v, True, n_coef
            return np.full(model.n_pq, np.nan + 0j), False, n_coef
        next_chk = _next_check_single(n_coef, err, prev_err, prev_n, rate0, tol_pu)
        prev_err, prev_n = err, n_coef


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
    feeder's slack (its angle is kept). ``tol_pu``: agreement of successive Padé approximants
    for convergence; ``max_coefficients``: series length after which a scenario counts as
    collapsed. Returns a ``HelmResult``; scenarios without an operable solution have
    ``converged`` False and NaN voltages.
    """
    if not (np.isfinite(tol_pu) and tol_pu > 0):
        raise ValueError(f"tol_pu must be > 0, got {tol_pu}")
    if int(max_coefficients) != max_coefficients or max_coefficients < 4:
        raise ValueError(f"max_coefficients must be an integer >= 4, got {max_coefficients}")
    with _single_thread_blas(), np.errstate(all="ignore"):  # NaN/inf are handled explicitly
        return _solve(feeder, p_kw, q_kvar, v_slack_pu, float(tol_pu), int(max_coefficients))


def _solve(
    feeder: Feeder,
    p_kw: Any,
    q_kvar: Any,
    v_slack_pu: Any,
    tol_pu: float,
    max_coefficients: int,
) -> HelmResult:
    model = _helm_model(feeder)
    p, q = _scenario_arrays(feeder, p_kw, q_kvar)
    n_scen = p.shape[0]
    if n_scen == 1 and v_slack_pu is not None and np.ndim(v_slack_pu) == 1:
        n_scen = int(np.shape(v_slack_pu)[0])  # one load case, several slack voltages
        p = np.broadcast_to(p, (n_scen, p.shape[1]))
        q = np.broadcast_to(q, (n_scen, q.shape[1]))
    v_slack = _slack_voltages(model, v_slack_pu, n_scen)
    scale = -1e-3 / S_BASE_MVA
    if n_scen == 1:
        return _solve_one(
            model, feeder, p[0], q[0], complex(v_slack[0]), tol_pu, max_coefficients
        )
    if model.aggregate is None:
        cols = model.pq_bus_cols
        p_pq, q_pq = p[:, cols], q[:, cols]
    else:
        p_pq, q_pq = p @ model.aggregate, q @ model.aggregate
    loaded_mask = np.any((p_pq != 0) | (q_pq != 0), axis=0)
    plan = _plan(model, loaded_mask)
    loaded = plan.order[: plan.n_load]
    conj_s = scale * (p_pq[:, loaded] - 1j * q_pq[:, loaded])  # conj(S) of the injections

    n_pq = model.n_pq
    v_plan = np.empty((n_scen, n_pq), dtype=complex)
    conv = np.empty(n_scen, dtype=bool)
    n_used = np.empty(n_scen, dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // max(n_pq, 1))
    for start in range(0, n_scen, block):
        # blocks of scenarios, vectorised within a block (bounded memory, data in cache)
        sl = slice(start, min(start + block, n_scen))
        v_plan[sl], conv[sl], n_used[sl] = _solve_block(
            model, plan, conj_s[sl], v_slack[sl], tol_pu, max_coefficients
        )

    v_node = np.empty((n_scen, model.n_node), dtype=complex)
    v_node[:, model.slack_node] = v_slack
    v_node[:, plan.nodes] = v_plan
    if conv.any():
        # mismatch check: S_calc = V conj(Y V) must equal the specified injections
        ok = np.flatnonzero(conv)
        v_ok = v_node[ok]
        current = (model.y_pq_rows @ v_ok.T).T
        s_calc = v_ok[:, model.pq_nodes] * np.conj(current)
        s_spec = scale * (p_pq[ok] + 1j * q_pq[ok])
        mismatch = np.max(np.abs(s_calc - s_spec), axis=1)
        conv[ok[~(mismatch <= MISMATCH_TOL_PU)]] = False
    v_node[~conv] = np.nan + 0j
    return HelmResult(
        v_pu=v_node[:, model.bus_to_node],
        converged=conv,
        n_coefficients=int(n_used.max()) if n_scen else 0,
        n_coefficients_per_scenario=n_used,
        bus_ids=feeder.bus_ids,
        branches=branch_loading(feeder),
    )


def _solve_one(
    model: _HelmModel,
    feeder: Feeder,
    p: np.ndarray,
    q: np.ndarray,
    v_slack: complex,
    tol_pu: float,
    max_coefficients: int,
) -> HelmResult:
    """``_solve`` for one scenario (p, q: (n_bus,)) with 1-D arrays throughout: the same
    loads, plan, series and mismatch test, with less per-call overhead (latency path)."""
    scale = -1e-3 / S_BASE_MVA
    n_pq = model.n_pq
    if model.aggregate is None:
        cols = model.pq_bus_cols
        p_pq, q_pq = p[cols], q[cols]
    else:
        p_pq = np.bincount(model.agg_pq, weights=p[model.agg_rows], minlength=n_pq)
        q_pq = np.bincount(model.agg_pq, weights=q[model.agg_rows], minlength=n_pq)
    plan = _plan(model, (p_pq != 0) | (q_pq != 0))
    loaded = plan.order[: plan.n_load]
    conj_s = scale * (p_pq[loaded] - 1j * q_pq[loaded])  # conj(S) of the injections
    v_plan, ok, n_used = _solve_single(model, plan, conj_s, v_slack, tol_pu, max_coefficients)
    v_node = np.empty(model.n_node, dtype=complex)
    v_node[model.slack_node] = v_slack
    v_node[plan.nodes] = v_plan
    if ok:  # mismatch check: S_calc = V conj(Y V) must equal the specified injections
        y = model.y_pq_rows
        if model.y_rows_starts is not None:
            current = np.add.reduceat(y.data * v_node[y.indices], model.y_rows_starts)
        else:
            current = y @ v_node
        s_calc = v_node[model.pq_nodes] * np.conj(current)
        ok = bool(abs(s_calc - scale * (p_pq + 1j * q_pq)).max() <= MISMATCH_TOL_PU)
    if not ok:
        v_node[:] = np.nan + 0j
    return HelmResult(
        v_pu=v_node[model.bus_to_node][None, :],
        converged=np.array([ok]),
        n_coefficients=n_used,
        n_coefficients_per_scenario=np.array([n_used], dtype=np.int64),
        bus_ids=feeder.bus_ids,
        branches=branch_loading(feeder),
    )
