"""The oracle's forecasts: the day profile forecast and the persistence forecast of the bands.

* ``ProfileForecast``: the feeder's day profiles per bus (W/var); the feeder state
  (``oracle.state``) takes from it the minutes a load meter never reported and the buses with no
  load meter at all.
* Persistence forecast: the bands for interval t+1 come from the state of interval t.
  ``forecast_steps`` picks which of its minutes become OCM steps (``FORECAST_MODES``) and
  ``intersect_bands`` makes one band per flexibility valid at every step.
* Ramp forecast (mode ``ramps``, ``ramp_steps``): the last minute of interval t plus the worst
  ramps the same interval showed on previous days (``RampHistory``), so that the band holds while
  the load rises (or PV returns) within t+1, not only at the last measured minute.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gridshare.units import kw_to_w, micro_pu_to_pu, var_to_kvar, w_to_kw
from oracle.registry import SECONDS_PER_MINUTE

if TYPE_CHECKING:
    from oracle.state import FeederState

MINUTES_PER_DAY = 1440
FORECAST_MODES = ("all", "extremes", "last", "ramps")
#: Modes that pick minutes of the source interval (``forecast_steps``).
MINUTE_MODES = ("all", "extremes", "last")
#: Previous days the ``ramps`` forecast learns from (four weeks: 420 candidate ramps per
#: interval; docs/oracle.md has the trade-off measured against 7 days).
HISTORY_DAYS = 28

#: ``solver(p_kw (S, n_bus), q_kvar (S, n_bus), v_slack_pu)`` -> |V| (S, n_bus) pu.
VoltageMagnitudes = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


def helm_voltage_magnitudes(feeder: Any) -> VoltageMagnitudes:
    """A ``VoltageMagnitudes`` solver: |V| (S, n_bus) pu of S load scenarios by HELM
    (``capacity.helm.solve``)."""
    from capacity.helm import solve

    def solve_v(p_kw: np.ndarray, q_kvar: np.ndarray, v_slack_pu: float) -> np.ndarray:
        return np.abs(solve(feeder, p_kw=p_kw, q_kvar=q_kvar, v_slack_pu=v_slack_pu).v_pu)

    return solve_v


@dataclass(frozen=True)
class RampHistory:
    """Previous days of the feeder's uncontrollable net consumption per minute of day and bus:
    ``p_w``/``q_var`` (D, 1440, n_bus) W / var integers, rows as ``ProfileForecast``'s."""

    p_w: np.ndarray
    q_var: np.ndarray

    @classmethod
    def from_profiles(cls, days: Sequence[Any]) -> RampHistory:
        if not days:
            raise ValueError("a ramp history needs at least one previous day")
        return cls(np.stack([np.asarray(kw_to_w(d.p_kw), dtype=np.int64) for d in days]),
                   np.stack([np.asarray(kw_to_w(d.q_kvar), dtype=np.int64) for d in days]))

    @property
    def n_days(self) -> int:
        return int(self.p_w.shape[0])

    def ramps(self, anchor_row: int, n_min: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every previous day's change from minute row ``anchor_row`` to each of the ``n_min``
        minutes after it: dP (D * n_min, n_bus) W, dQ var, and each row's offset (1..n_min)
        in minutes. Rows wrap at midnight."""
        rows = (int(anchor_row) + np.arange(1, n_min + 1)) % MINUTES_PER_DAY
        d_p = self.p_w[:, rows, :] - self.p_w[:, [anchor_row], :]
        d_q = self.q_var[:, rows, :] - self.q_var[:, [anchor_row], :]
        offsets = np.tile(np.arange(1, n_min + 1), self.n_days)
        n_bus = self.p_w.shape[2]
        return d_p.reshape(-1, n_bus), d_q.reshape(-1, n_bus), offsets

    def envelope(self, anchor_row: int, n_min: int) -> tuple[np.ndarray, ...]:
        """Per minute after ``anchor_row`` (as ``ramps``) and bus, the least and the most P (W)
        and Q (var) any previous day had then: ``(p_lo, p_hi, q_lo, q_hi)``, each (n_min,
        n_bus)."""
        rows = (int(anchor_row) + np.arange(1, n_min + 1)) % MINUTES_PER_DAY
        p, q = self.p_w[:, rows, :], self.q_var[:, rows, :]
        return p.min(axis=0), p.max(axis=0), q.min(axis=0), q.max(axis=0)


@dataclass(frozen=True)
class ForecastSteps:
    """The OCM steps of one interval (K steps): unix time of the minute each stands for,
    uncontrollable P (K, n_bus) W and Q var, slack voltage (K,) micro-pu; integers."""

    timestamps: np.ndarray
    p_w: np.ndarray
    q_var: np.ndarray
    v_slack_micro_pu: np.ndarray

    @classmethod
    def of_minutes(cls, state: FeederState, minutes: np.ndarray) -> ForecastSteps:
        return cls(state.timestamps[minutes], state.p_w[minutes], state.q_var[minutes],
                   state.v_slack_micro_pu[minutes])


@dataclass(frozen=True)
class ProfileForecast:
    """Day profile forecast per bus (W/var integers, (1440, n_bus)); ``day_start_s`` is the unix
    time of minute 0. Other days repeat the same profile (minute of day = offset mod 1440).
    ``history``: previous days for the ``ramps`` forecast (None: not loaded)."""

    p_w: np.ndarray
    q_var: np.ndarray
    day_start_s: int
    history: RampHistory | None = None

    @classmethod
    def from_profiles(cls, profiles: Any, history: Sequence[Any] = ()) -> ProfileForecast:
        """From a ``DayProfiles`` and, for the ``ramps`` forecast, previous days' profiles."""
        return cls(np.asarray(kw_to_w(profiles.p_kw), dtype=np.int64),
                   np.asarray(kw_to_w(profiles.q_kvar), dtype=np.int64),
                   int(profiles.time[0].timestamp()),
                   RampHistory.from_profiles(history) if history else None)

    def minute_rows(self, timestamps: np.ndarray) -> np.ndarray:
        return ((np.asarray(timestamps) - self.day_start_s) // SECONDS_PER_MINUTE) % MINUTES_PER_DAY


def forecast_steps(state: FeederState, mode: str) -> np.ndarray:
    """Minutes of ``state`` used as OCM steps for the next interval (persistence forecast).

    ``all``: every minute; ``extremes``: the minutes of the largest and the smallest total
    uncontrollable consumption and the last minute (sorted, without repeats); ``last``: the last
    minute only. The bands of the steps are intersected.
    """
    if mode not in MINUTE_MODES:
        raise ValueError(f"forecast mode {mode!r} does not pick minutes; choose one of "
                         f"{MINUTE_MODES} (mode 'ramps': ramp_steps)")
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


def ramp_steps(state: FeederState, forecast: ProfileForecast, solve_v: VoltageMagnitudes,
               coverage: float = 1.0) -> ForecastSteps:
    """OCM steps robust to the interval: the worst ramps of previous days, then the last minute.

    Candidates: the last minute of ``state`` (the persistence forecast) plus every previous
    day's change from the same minute of day to each minute of the next interval
    (``RampHistory.ramps``: the joint change of all buses, as it happened), each bus kept within
    what any previous day had at that minute or what it has now (``RampHistory.envelope``): a
    day's PV returning after a cloud, added to a sunny minute now, would be more PV than the
    roofs give; a day's evening rise from a low start, added to a high load now, more load than
    any day had. One batched load
    flow with the flexibilities at rest ranks them; the steps are the candidate with the lowest
    bus voltage (load rising: it binds the all-max corner against ``v_low``) and the one with
    the highest (PV returning: the all-min corner against ``v_high``), each only if worse than
    the last minute, then the last minute itself (``intersect_bands`` falls back to it).
    ``coverage`` in (0, 1]: the share of the candidates the steps cover on each side (1: the
    worst; 0.95: the worst after leaving out the 5 % most extreme ramps).
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
    if forecast.history is None:
        raise ValueError("the 'ramps' forecast needs a ramp history (ProfileForecast.history)")
    last = state.p_w.shape[0] - 1
    anchor = int(forecast.minute_rows(state.timestamps[last:])[0])
    n_min = state.p_w.shape[0]
    d_p, d_q, offsets = forecast.history.ramps(anchor, n_min)
    p_lo, p_hi, q_lo, q_hi = (np.tile(x, (forecast.history.n_days, 1))
                              for x in forecast.history.envelope(anchor, n_min))
    p_now, q_now = state.p_w[last], state.q_var[last]
    p_w = np.vstack([p_now, np.clip(p_now + d_p, np.minimum(p_lo, p_now),
                                    np.maximum(p_hi, p_now))])
    q_var = np.vstack([q_now, np.clip(q_now + d_q, np.minimum(q_lo, q_now),
                                      np.maximum(q_hi, q_now))])
    v_slack = int(state.v_slack_micro_pu[last])
    v = solve_v(np.asarray(w_to_kw(p_w), dtype=float), np.asarray(var_to_kvar(q_var), dtype=float),
                float(micro_pu_to_pu(v_slack)))
    v_min, v_max = v.min(axis=1), v.max(axis=1)  # NaN where a scenario collapsed
    v_min = np.where(np.isfinite(v_min), v_min, -np.inf)  # collapsed: the worst of all
    v_max = np.where(np.isfinite(v_max), v_max, np.inf)
    rank = int(np.floor((1.0 - coverage) * (v_min.size - 1)))
    low = int(np.argsort(v_min, kind="stable")[rank])
    high = int(np.argsort(-v_max, kind="stable")[rank])
    picks = [k for k, worse in ((low, v_min[low] < v_min[0]), (high, v_max[high] > v_max[0]))
             if worse]
    picks = [*dict.fromkeys(picks), 0]
    ts = state.timestamps[last] + SECONDS_PER_MINUTE * np.r_[0, offsets]
    return ForecastSteps(ts[picks], p_w[picks], q_var[picks],
                         np.full(len(picks), v_slack, dtype=np.int64))
