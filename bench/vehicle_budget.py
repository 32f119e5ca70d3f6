"""What the evening's vehicles cost the community battery on the default day (issue 16).

One command: ``python bench/vehicle_budget.py [--seed 0] [--from-hour 17] [--coverage 0.95]``.

Every charging station draws a constant ``level`` kW while one of its vehicles is connected (the
day's sessions, ``gridshare.sim.agents.ev_sessions``). The least battery discharge that keeps
every bus at 0.95 pu (``capacity.reserve.needed_discharge_kw``, the other flexibilities at rest)
is summed from ``--from-hour`` to midnight for three ways of operating the battery:

* ``following``: the battery gives each minute what that minute needs (a controller that
  measures the feeder; no forecast);
* ``exact``: a band held for each 15-minute interval at the interval's own worst minute (a
  perfect forecast);
* ``robust``: a band held for each interval at what the oracle's steps need: the last minute of
  the interval before plus the previous days' ramps it covers (``oracle.forecast.ramp_steps``
  with ``--coverage``, 28 days), i.e. the bands the simulation publishes. ``short`` counts the
  intervals whose own worst minute needed more than the robust band gives.

Energies are kWh AC and the battery's cell energy (``/ 0.95``); compare the cells with the
usable 80 kWh (``soc_max - soc_min`` of ``default_storage``). The vehicle energy the level
delivers is capped at the sessions' needs. Deterministic: one run is the measurement.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np

from capacity.reserve import needed_discharge_kw
from capacity.storage import PPM, default_storage
from gridshare.sim.agents import MINUTES_PER_DAY, ev_sessions
from gridshare.sim.run import RAMP_COVERAGE
from gridshare.units import kw_to_w, pu_to_micro_pu, wh_to_kwh
from oracle.forecast import HISTORY_DAYS, helm_voltage_magnitudes, ramp_steps
from oracle.state import feeder_model, feeder_profiles, profile_forecast

FEEDER = "heimschuh-like"
LEVELS_KW = (0.0, 4.2, 5.0, 6.0, 7.0, 8.0)
INTERVAL_MIN = 15


def connected(sessions: list, names: list[str], first_minute: int) -> np.ndarray:
    """(n_intervals, n_stations): whether a vehicle is connected in each interval from
    ``first_minute`` to midnight (any minute of it)."""
    n = (MINUTES_PER_DAY - first_minute) // INTERVAL_MIN
    out = np.zeros((n, len(names)), dtype=bool)
    starts = first_minute + INTERVAL_MIN * np.arange(n)
    for s in sessions:
        j = names.index(s.station)
        out[:, j] |= (np.minimum(starts + INTERVAL_MIN, s.depart_min)
                      > np.maximum(starts, s.arrive_min))
    return out


def with_stations(p_kw: np.ndarray, cols: list[int], station_kw: np.ndarray) -> np.ndarray:
    """``p_kw`` (K, n_bus) with each station's power (kW) added at its bus column."""
    out = np.array(p_kw, dtype=float)
    out[:, cols] += station_kw
    return out


def robust_steps(feeder: object, profiles: object, seed: int, first: int, coverage: float
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per interval from ``first`` to midnight: the oracle's ramp steps (P kW, Q kvar), each
    (K, n_bus), from the interval before as it was metered (the day's own minutes)."""
    forecast = profile_forecast(FEEDER, seed, HISTORY_DAYS)
    solve_v = helm_voltage_magnitudes(feeder)
    p_w = np.asarray(kw_to_w(np.asarray(profiles.p_kw)), dtype=np.int64)
    q_var = np.asarray(kw_to_w(np.asarray(profiles.q_kvar)), dtype=np.int64)
    v_slack = int(pu_to_micro_pu(abs(feeder.slack.vm_pu)))
    out = []
    for start in range(first, MINUTES_PER_DAY, INTERVAL_MIN):
        rows = np.arange(start - INTERVAL_MIN, start)
        state = SimpleNamespace(p_w=p_w[rows], q_var=q_var[rows],
                                timestamps=forecast.day_start_s + 60 * rows,
                                v_slack_micro_pu=np.full(rows.size, v_slack, dtype=np.int64))
        steps = ramp_steps(state, forecast, solve_v, coverage)
        out.append((steps.p_w / 1000.0, steps.q_var / 1000.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-hour", type=int, default=17)
    parser.add_argument("--coverage", type=float, default=RAMP_COVERAGE)
    args = parser.parse_args()
    feeder = feeder_model(FEEDER)
    profiles = feeder_profiles(FEEDER, args.seed)
    battery = next(f for f in feeder.flexibilities if f.kind.value == "community_battery")
    stations = [f for f in feeder.flexibilities if f.kind.value == "charging_station"]
    names = [f.name for f in stations]
    sessions = [s for s in ev_sessions([(f.name, float(f.p_high_kw)) for f in stations],
                                       args.seed) if s.depart_min > args.from_hour * 60]
    first = args.from_hour * 60
    minutes = np.arange(first, MINUTES_PER_DAY)
    here = connected(sessions, names, first)
    here_min = np.repeat(here, INTERVAL_MIN, axis=0)  # (minutes, stations)
    cols = [feeder.bus_position(f.bus_id) for f in stations]
    storage = default_storage(int(kw_to_w(battery.p_high_kw)))
    to_cells = PPM / storage.discharge_efficiency_ppm
    usable_kwh = float(wh_to_kwh(storage.soc_max_wh - storage.soc_min_wh))
    v_slack_pu = abs(feeder.slack.vm_pu)

    def need_kw(p_kw: np.ndarray, q_kvar: np.ndarray) -> np.ndarray:
        return needed_discharge_kw(feeder, battery.bus_id, p_kw, q_kvar, v_slack_pu, 0.95,
                                   float(battery.p_high_kw))

    steps = robust_steps(feeder, profiles, args.seed, first, args.coverage)
    print(f"{FEEDER}, seed {args.seed}, {args.from_hour}:00-24:00; vehicles need "
          f"{sum(s.energy_kwh for s in sessions):.1f} kWh; battery usable {usable_kwh:.1f} kWh "
          f"(cells); robust = ramps of {HISTORY_DAYS} days, coverage {args.coverage}")
    print("station kW | battery cells kWh: following | exact | robust (short) | vehicle kWh")
    for level in LEVELS_KW:
        p_kw = np.asarray(profiles.p_kw, dtype=float)[minutes].copy()
        p_kw[:, cols] += level * here_min
        minute_kw = need_kw(p_kw, np.asarray(profiles.q_kvar, dtype=float)[minutes])
        exact_kw = minute_kw.reshape(-1, INTERVAL_MIN).max(axis=1)
        robust_kw = np.array([need_kw(with_stations(p, cols, here[k] * level), q).max()
                              for k, (p, q) in enumerate(steps)])
        short = int(np.sum(robust_kw < exact_kw - 1e-3))
        delivered = sum(min(s.energy_kwh, level * max(0, s.depart_min - max(s.arrive_min, first))
                            / 60) for s in sessions)
        following, exact, robust = (float(x) * to_cells for x in (
            minute_kw.sum() / 60, exact_kw.sum() * INTERVAL_MIN / 60,
            robust_kw.sum() * INTERVAL_MIN / 60))
        print(f"{level:10.1f} | {following:26.1f} | {exact:5.1f} | {robust:6.1f} ({short:2d})"
              f"    | {delivered:.1f}")


if __name__ == "__main__":
    main()
