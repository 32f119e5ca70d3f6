"""The oracle's forecasts: the day profile forecast and the persistence forecast of the bands.

* ``ProfileForecast``: the feeder's day profiles per bus (W/var); the feeder state
  (``oracle.state``) takes from it the minutes a load meter never reported and the buses with no
  load meter at all.
* Persistence forecast: the bands for interval t+1 come from the state of interval t.
  ``forecast_steps`` picks which of its minutes become OCM steps (``FORECAST_MODES``) and
  ``intersect_bands`` makes one band per flexibility valid at every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gridshare.units import kw_to_w
from oracle.registry import SECONDS_PER_MINUTE

if TYPE_CHECKING:
    from oracle.state import FeederState

MINUTES_PER_DAY = 1440
FORECAST_MODES = ("all", "extremes", "last")


@dataclass(frozen=True)
class ProfileForecast:
    """Day profile forecast per bus (W/var integers, (1440, n_bus)); ``day_start_s`` is the unix
    time of minute 0. Other days repeat the same profile (minute of day = offset mod 1440)."""

    p_w: np.ndarray
    q_var: np.ndarray
    day_start_s: int

    @classmethod
    def from_profiles(cls, profiles: Any) -> ProfileForecast:
        return cls(np.asarray(kw_to_w(profiles.p_kw), dtype=np.int64),
                   np.asarray(kw_to_w(profiles.q_kvar), dtype=np.int64),
                   int(profiles.time[0].timestamp()))

    def minute_rows(self, timestamps: np.ndarray) -> np.ndarray:
        return ((np.asarray(timestamps) - self.day_start_s) // SECONDS_PER_MINUTE) % MINUTES_PER_DAY


def forecast_steps(state: FeederState, mode: str) -> np.ndarray:
    """Minutes of ``state`` used as OCM steps for the next interval (persistence forecast).

    ``all``: every minute; ``extremes``: the minutes of the largest and the smallest total
    uncontrollable consumption and the last minute (sorted, without repeats); ``last``: the last
    minute only. The bands of the steps are intersected.
    """
    if mode not in FORECAST_MODES:
        raise ValueError(f"unknown forecast mode {mode!r}; choose one of {FORECAST_MODES}")
    n = state.p_w.shape[0]
    if mode == "all":
        return np.arange(n)
    if mode == "last":
        return np.array([n - 1])
    total = state.p_w.sum(axis=1)
    return np.unique([int(np.argmax(total)), int(np.argmin(total)), n - 1])


def intersect_bands(p_min_kw: np.ndarray, p_max_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                          np.ndarray]:
    """One band per flexibility valid at every step: (lo, hi, empty) from (T, n_flex) bands.

    lo = max over steps of P_min, hi = min over steps of P_max: a box inside every step's
    certified box. Where they cross for any device (``empty``), no box lies inside all steps'
    boxes, and a point made up between them would be certified by no step; the whole band of the
    last step (the newest minute, certified as it stands) is published instead.
    """
    p_min_kw = np.atleast_2d(np.asarray(p_min_kw, dtype=float))
    p_max_kw = np.atleast_2d(np.asarray(p_max_kw, dtype=float))
    lo = np.max(p_min_kw, axis=0)
    hi = np.min(p_max_kw, axis=0)
    empty = lo > hi
    if empty.any():
        return p_min_kw[-1].copy(), p_max_kw[-1].copy(), empty
    return lo, hi, empty
