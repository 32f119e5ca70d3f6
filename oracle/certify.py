"""Independent certification of a band before it is written: pandapower's Newton-Raphson.

OCM (``capacity.ocm``) computes and certifies the bands with HELM, its own solver. Before the
oracle writes a band, a second solver that shares no code with HELM checks it: pandapower's
Newton-Raphson (``capacity.nr_check.NewtonRaphson`` on the feeder's own pandapower net, every
load and generator replaced by one load per bus) at every OCM step of the band's inputs, with the
flexibilities at

* the band's two extreme corners (every flexibility at its P_min, every one at its P_max), and
* ``NrSettings.n_random`` points drawn uniformly inside the band (seeded by the interval's OCM
  seed, so the check is reproducible from the canonical inputs).

A battery that follows the feeder (``oracle.service.follow_battery``) is checked at each step
at its point but at most the step's own upper bound (``step_max_w``): within its band it takes
no more than keeps that step's buses at ``v_low``.

A point passes when the load flow converges, every bus voltage lies within the inputs' OCM
limits widened by ``tolerance_pu`` (HELM and NR agree to about 1e-6 pu; OCM keeps a margin of
1e-5 pu) and every rated line and transformer stays within the inputs' loading limit
(pandapower's ``loading_percent``) widened by ``tolerance_loading_pct``. The steps are checked in
order and a step with a failing point ends the round. If any point fails, the band is narrowed
towards its anchor (each flexibility's idle point 0 W clipped into its band):
``P = a + s (P - a)`` with ``s = 1/2, 1/4, ...``, at most ``max_narrowing`` times, and checked
again; a band that still fails is not written (the oracle records the interval as skipped).
Every load flow run, failed point and narrowing is counted.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gridshare.units import (
    micro_pu_to_pu,
    milli_pct_to_pct,
    nano_pu_to_pu,
    pct_to_milli_pct,
    pu_to_nano_pu,
    var_to_kvar,
    w_to_kw,
)


@dataclass(frozen=True)
class NrSettings:
    """The check's parameters (part of the canonical inputs): random points per step, voltage
    tolerance in pu, how often a failing band is halved towards its anchor, and the loading
    tolerance in percentage points."""

    n_random: int = 2
    tolerance_pu: float = 1e-4
    max_narrowing: int = 3
    tolerance_loading_pct: float = 0.01

    def __post_init__(self) -> None:
        if self.n_random < 0 or self.max_narrowing < 0 or not self.tolerance_pu >= 0:
            raise ValueError(f"n_random, max_narrowing and tolerance_pu must be >= 0: {self}")

    def as_inputs(self) -> dict[str, int]:
        """The ``nr`` part of the canonical inputs (integers: tolerance in nano-pu)."""
        return {"n_random": self.n_random, "tolerance_nano_pu": pu_to_nano_pu(self.tolerance_pu),
                "max_narrowing": self.max_narrowing,
                "tolerance_loading_milli_pct": pct_to_milli_pct(self.tolerance_loading_pct)}


@dataclass(frozen=True)
class NrCheck:
    """Outcome of one band's check: the band to write (W; None: not certified), load flows run
    (``points``), failed ones, and how often the band was narrowed."""

    p_min_w: list[int] | None
    p_max_w: list[int] | None
    points: int
    failed: int
    narrowed: int

    @property
    def certified(self) -> bool:
        return self.p_min_w is not None


@functools.lru_cache(maxsize=4)
def newton_raphson(feeder_name: str) -> Any:
    """The NR solver of a built-in feeder, on its own pandapower net (built once per process)."""
    from capacity.feeders import load_feeder, load_pandapower_net
    from capacity.nr_check import NewtonRaphson

    return NewtonRaphson(load_feeder(feeder_name), net=load_pandapower_net(feeder_name))


def _scenarios(inputs: Mapping[str, Any], flex_kw: np.ndarray,
               step_max_kw: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Per (step, point) the per-bus P/Q (kW/kvar) and slack voltage (pu): the step's
    uncontrollable load plus the flexibilities at the point ``flex_kw`` (points, n_flex), each
    at most its ``step_max_kw`` (steps, n_flex) at that step (a battery that follows the
    feeder), but not below the point's first row (the box's lower corner)."""
    p = np.asarray(w_to_kw(np.asarray(inputs["p_w"], dtype=float)), dtype=float)
    q = np.asarray(var_to_kvar(np.asarray(inputs["q_var"], dtype=float)), dtype=float)
    vs = np.asarray(micro_pu_to_pu(np.asarray(inputs["v_slack_micro_pu"], dtype=float)))
    col = {int(b): k for k, b in enumerate(inputs["bus_ids"])}
    cols = np.array([col[int(d[1])] for d in inputs["devices"]], dtype=np.int64)
    n_steps, n_points = p.shape[0], flex_kw.shape[0]
    points = np.tile(flex_kw, (n_steps, 1))
    if step_max_kw is not None:
        cap = np.maximum(np.repeat(step_max_kw, n_points, axis=0), flex_kw[0])
        points = np.minimum(points, cap)
    p_all = np.repeat(p, n_points, axis=0)
    np.add.at(p_all, (np.arange(p_all.shape[0])[:, None], cols[None, :]), points)
    return p_all, np.repeat(q, n_points, axis=0), np.repeat(vs, n_points)


def _failing(inputs: Mapping[str, Any], lo_w: np.ndarray, hi_w: np.ndarray, rng: Any,
             settings: NrSettings, step_max_w: np.ndarray | None = None) -> tuple[int, int]:
    """(points run, points failed) for the box ``[lo_w, hi_w]`` (see module docstring), step by
    step; the steps after the first failing one are not run (the box is narrowed anyway)."""
    corners = np.vstack([lo_w, hi_w])
    random = rng.uniform(lo_w, hi_w, size=(settings.n_random, lo_w.size))
    flex_kw = np.asarray(w_to_kw(np.vstack([corners, random])), dtype=float)
    p, q, vs = _scenarios(inputs, flex_kw, None if step_max_w is None
                          else np.asarray(w_to_kw(step_max_w), dtype=float))
    ocm = inputs["ocm"]
    v_low = float(micro_pu_to_pu(ocm["v_low_micro_pu"])) - settings.tolerance_pu
    v_high = float(micro_pu_to_pu(ocm["v_high_micro_pu"])) + settings.tolerance_pu
    solver = newton_raphson(str(inputs["feeder"]))
    limits = _loading_limits(solver.feeder, ocm, settings)
    n = flex_kw.shape[0]
    for first in range(0, p.shape[0], n):
        res = solver.run(p[first:first + n], q[first:first + n], vs[first:first + n])
        vm = np.where(res.converged[:, None], res.vm_pu, np.nan)
        loaded = np.nan_to_num(res.branch_loading_pct, nan=0.0) <= limits
        ok = res.converged & (np.nanmin(vm, axis=1) >= v_low) \
            & (np.nanmax(vm, axis=1) <= v_high) & loaded.all(axis=1)
        if not ok.all():
            return first + n, int(np.count_nonzero(~ok))
    return p.shape[0], 0


def loading_limits_pct(ocm_inputs: Mapping[str, Any]) -> tuple[float, float]:
    """(line, transformer) loading limits in percent from the ``ocm`` inputs (integer 1e-3 %);
    inputs written before thermal limits existed carry none (``inf``): they recompute as they
    were."""
    def limit(key: str) -> float:
        value = ocm_inputs.get(key)
        return math.inf if value is None else milli_pct_to_pct(value)

    return limit("max_line_loading_milli_pct"), limit("max_trafo_loading_milli_pct")


def _loading_limits(feeder: Any, ocm: Mapping[str, Any], settings: NrSettings) -> np.ndarray:
    """Per branch (lines, then transformers) the highest loading that passes, percent: the
    inputs' thermal limits widened by ``tolerance_loading_pct`` (inf where none)."""
    line_pct, trafo_pct = loading_limits_pct(ocm)
    return np.concatenate([np.full(len(feeder.lines), line_pct),
                           np.full(len(feeder.trafos), trafo_pct)]) \
        + settings.tolerance_loading_pct


def certify(inputs: Mapping[str, Any], p_min_w: list[int], p_max_w: list[int],
            settings: NrSettings, step_max_w: np.ndarray | None = None) -> NrCheck:
    """Check a band with Newton-Raphson, narrowing it if needed (see module docstring);
    ``step_max_w`` (steps, n_flex), W, ``inf`` where none: the most each flexibility takes at
    each step (a battery that follows the feeder, ``follow_battery``)."""
    lo = np.asarray(p_min_w, dtype=float)
    hi = np.asarray(p_max_w, dtype=float)
    anchor = np.clip(0.0, lo, hi)
    rng = np.random.default_rng(int(inputs["ocm"]["seed"]))
    points = failed = 0
    for rounds in range(settings.max_narrowing + 1):
        scale = 0.5**rounds
        box_lo = np.ceil(anchor + scale * (lo - anchor))
        box_hi = np.maximum(np.floor(anchor + scale * (hi - anchor)), box_lo)
        n, bad = _failing(inputs, box_lo, box_hi, rng, settings, step_max_w)
        points, failed = points + n, failed + bad
        if not bad:
            return NrCheck([int(x) for x in box_lo], [int(x) for x in box_hi], points, failed,
                           rounds)
    return NrCheck(None, None, points, failed, settings.max_narrowing)


def nr_settings_of(inputs: Mapping[str, Any]) -> NrSettings | None:
    """The check's settings named in canonical inputs (None: inputs without the check)."""
    nr = inputs.get("nr")
    if nr is None:
        return None
    return NrSettings(int(nr["n_random"]), nano_pu_to_pu(nr["tolerance_nano_pu"]),
                      int(nr["max_narrowing"]),
                      milli_pct_to_pct(nr.get("tolerance_loading_milli_pct", 10)))
