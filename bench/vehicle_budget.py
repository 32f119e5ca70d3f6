"""What the evening's vehicles cost the community battery on the default day (issue 16).

One command: ``python bench/vehicle_budget.py [--seed 0] [--from-hour 17]``.

With perfect foresight (the day's own minute profiles, no forecast error) and every charging
station drawing a constant ``level`` kW while one of its vehicles is connected (the default
day's sessions, ``gridshare.sim.agents.ev_sessions``), the least battery discharge that keeps
every bus at 0.95 pu at every minute (``capacity.reserve.needed_discharge_kw``), held for each
15-minute interval at its minute that needs the most (a band governs a whole interval), summed
from ``--from-hour`` to midnight (kWh AC) and as the battery's cell energy (``/ 0.95``), next to
the vehicle energy the level delivers (capped at the sessions' needs). Compare with the
battery's usable cell energy (``soc_max - soc_min`` of ``default_storage``): the level the
battery can carry with perfect foresight bounds what any band can give; the simulated day's
bands, certified for the interval's worst ramps of 28 previous days, need more. Deterministic:
one run is the measurement.
"""

from __future__ import annotations

import argparse

import numpy as np

from capacity.reserve import needed_discharge_kw
from capacity.storage import PPM, default_storage
from gridshare.sim.agents import MINUTES_PER_DAY, ev_sessions
from gridshare.units import kw_to_w, wh_to_kwh
from oracle.state import feeder_model, feeder_profiles

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-hour", type=int, default=17)
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
    usable_kwh = float(wh_to_kwh(storage.soc_max_wh - storage.soc_min_wh))
    needed_kwh = sum(s.energy_kwh for s in sessions)
    print(f"{FEEDER}, seed {args.seed}, {args.from_hour}:00-24:00; vehicles need "
          f"{needed_kwh:.1f} kWh; battery usable {usable_kwh:.1f} kWh (cells)")
    print("station level kW | battery discharge kWh AC | cells kWh | vehicle kWh delivered")
    for level in LEVELS_KW:
        p_kw = np.asarray(profiles.p_kw, dtype=float)[minutes].copy()
        p_kw[:, cols] += level * here_min
        need = needed_discharge_kw(feeder, battery.bus_id, p_kw,
                                   np.asarray(profiles.q_kvar, dtype=float)[minutes],
                                   abs(feeder.slack.vm_pu), 0.95, float(battery.p_high_kw))
        ac_kwh = float(need.reshape(-1, INTERVAL_MIN).max(axis=1).sum()) * INTERVAL_MIN / 60
        cells_kwh = ac_kwh * PPM / storage.discharge_efficiency_ppm
        delivered = sum(min(s.energy_kwh, level * max(0, s.depart_min - max(s.arrive_min, first))
                            / 60) for s in sessions)
        print(f"{level:16.1f} | {ac_kwh:24.1f} | {cells_kwh:9.1f} | {delivered:.1f}")


if __name__ == "__main__":
    main()
