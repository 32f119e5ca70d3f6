"""The discharge the grid needs from a community battery (OCM paper Fig. 11's forced region).

Where the uncontrollable load alone pulls a bus below ``v_low`` (the evening peak on a weak
feeder), no band is safe unless the battery injects: ``needed_discharge_kw`` is the least
injection that lifts every bus to ``v_low + margin`` with every other flexibility at rest. On a
radial feeder every bus voltage rises when the battery injects more, so a bisection on the
battery's power finds it for a batch of scenarios at once (one HELM load flow per step).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Bisection steps: the power is found to ``p_max_kw / 2**BISECTION_STEPS`` (50 kW: 0.8 W).
BISECTION_STEPS = 16


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
    from capacity.helm import solve

    p_kw = np.atleast_2d(np.asarray(p_kw, dtype=float))
    q_kvar = np.atleast_2d(np.asarray(q_kvar, dtype=float))
    if p_kw.shape != q_kvar.shape or p_kw.shape[1] != feeder.n_bus:
        raise ValueError(f"p_kw and q_kvar must be (S, {feeder.n_bus}), got {p_kw.shape} and "
                         f"{q_kvar.shape}")
    if not p_max_kw > 0:
        raise ValueError(f"p_max_kw must be > 0, got {p_max_kw}")
    col = feeder.bus_position(int(battery_bus_id))
    limit = v_low_pu + margin_pu

    def holds(discharge_kw: np.ndarray) -> np.ndarray:
        p = p_kw.copy()
        p[:, col] -= discharge_kw
        v_min = np.abs(solve(feeder, p_kw=p, q_kvar=q_kvar, v_slack_pu=v_slack_pu).v_pu).min(
            axis=1)
        return np.isfinite(v_min) & (v_min >= limit)

    lo = np.zeros(p_kw.shape[0])
    hi = np.full(p_kw.shape[0], float(p_max_kw))
    needed = ~holds(lo)
    if not needed.any():
        return lo
    lo_n, hi_n = lo[needed], hi[needed]
    p_kw, q_kvar = p_kw[needed], q_kvar[needed]
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo_n + hi_n)
        ok = holds(mid)
        hi_n = np.where(ok, mid, hi_n)
        lo_n = np.where(ok, lo_n, mid)
    out = lo.copy()
    out[needed] = hi_n
    return out
