"""The power the grid allows a community battery at its lower voltage limit (OCM paper Fig. 11's
forced region).

Where the uncontrollable load alone pulls a bus below ``v_low`` (the evening peak on a weak
feeder), no band is safe unless the battery injects. On a radial feeder every bus voltage rises
when the battery consumes less (injects more), so a bisection on the battery's power finds, for a
batch of scenarios at once (one HELM load flow per step):

* ``highest_power_kw``: the most a battery may consume (kW, consumption positive) within
  ``[lo_kw, hi_kw]`` while every bus stays at or above ``v_low + margin``: how a battery that
  follows the feeder operates inside its band (``gridshare.sim`` minute by minute);
* ``needed_discharge_kw``: the least injection that lifts every bus to ``v_low + margin`` with
  every other flexibility at rest (``highest_power_kw`` in ``[-p_max, 0]``, negated).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Bisection steps: the power is found to ``(hi - lo) / 2**BISECTION_STEPS`` (50 kW: 0.8 W).
BISECTION_STEPS = 16


def highest_power_kw(
    feeder: Any,
    battery_bus_id: int,
    p_kw: np.ndarray,
    q_kvar: np.ndarray,
    v_slack_pu: float,
    v_low_pu: float,
    lo_kw: np.ndarray | float,
    hi_kw: np.ndarray | float,
    margin_pu: float = 0.0,
) -> np.ndarray:
    """Highest battery power (kW, consumption positive) per scenario within ``[lo_kw, hi_kw]``
    keeping every bus at or above ``v_low_pu + margin_pu``; ``lo_kw`` where even that does not
    (the grid needs more than the band gives).

    ``p_kw``/``q_kvar`` (S, n_bus): net consumption without the battery (kW / kvar, feeder bus
    order); ``lo_kw``/``hi_kw``: scalars or (S,) with ``lo <= hi``.
    """
    from capacity.helm import solve

    p_kw = np.atleast_2d(np.asarray(p_kw, dtype=float))
    q_kvar = np.atleast_2d(np.asarray(q_kvar, dtype=float))
    if p_kw.shape != q_kvar.shape or p_kw.shape[1] != feeder.n_bus:
        raise ValueError(f"p_kw and q_kvar must be (S, {feeder.n_bus}), got {p_kw.shape} and "
                         f"{q_kvar.shape}")
    lo = np.broadcast_to(np.asarray(lo_kw, dtype=float), p_kw.shape[:1]).copy()
    hi = np.broadcast_to(np.asarray(hi_kw, dtype=float), p_kw.shape[:1]).copy()
    if not np.all(lo <= hi):
        raise ValueError("the battery's range needs lo_kw <= hi_kw")
    col = feeder.bus_position(int(battery_bus_id))
    limit = v_low_pu + margin_pu

    def holds(power_kw: np.ndarray, rows: np.ndarray) -> np.ndarray:
        p = p_kw[rows].copy()
        p[:, col] += power_kw
        v_min = np.abs(solve(feeder, p_kw=p, q_kvar=q_kvar[rows],
                             v_slack_pu=v_slack_pu).v_pu).min(axis=1)
        return np.isfinite(v_min) & (v_min >= limit)

    out = hi.copy()
    rows = np.flatnonzero(~holds(hi, np.arange(p_kw.shape[0])))
    if rows.size == 0:
        return out
    ok_lo, bad_hi = lo[rows], hi[rows]  # bisection: ok_lo holds or is lo, bad_hi fails
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (ok_lo + bad_hi)
        ok = holds(mid, rows)
        ok_lo = np.where(ok, mid, ok_lo)
        bad_hi = np.where(ok, bad_hi, mid)
    out[rows] = ok_lo
    return out


def needed_discharge_kw(
    feeder: Any,
    battery_bus_id: int,
    p_kw: np.ndarray,
    q_kvar: np.ndarray,
    v_slack_pu: float,
    v_low_pu: float,
    p_max_kw: float,
    margin_pu: float = 0.0,
) -> np.ndarray:
    """Least battery injection (kW >= 0) per scenario keeping every bus at or above
    ``v_low_pu + margin_pu`` with the other flexibilities at rest.

    ``p_kw``/``q_kvar`` (S, n_bus): uncontrollable net consumption (kW / kvar, feeder bus
    order). A scenario that needs more than ``p_max_kw`` (the battery's rated discharge) gets
    ``p_max_kw``: the most the battery can give (the grid then needs more than it has).
    """
    if not p_max_kw > 0:
        raise ValueError(f"p_max_kw must be > 0, got {p_max_kw}")
    return -highest_power_kw(feeder, battery_bus_id, p_kw, q_kvar, v_slack_pu, v_low_pu,
                             -float(p_max_kw), 0.0, margin_pu) + 0.0
