"""Robust and battery-aware bands on the default day: band width against violations (issue 16).

One command: ``python bench/bands_tradeoff.py [--variant NAME ...] [--hours 24]``.

Each variant runs the whole ``gridshare simulate`` day (heimschuh-like, seed 0, embedded chain,
the default Newton-Raphson sample of 48 minutes x 11 points as operated) with the simulation's
oracle settings (``gridshare.sim.run.default_ocm``) changed as named, and prints per variant:
load flows outside the limits as operated, intervals settled, the vehicles' energy, the mean
``P_max`` of the stations' bands (how wide the bands are), the battery's discharge (traded,
and metered: a battery that follows the feeder gives more than it traded) and the run time.
About 5 minutes per variant; the day is deterministic, so one run per variant is the
measurement (the run time varies by a few percent between runs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from gridshare.sim import Simulation, SimulationConfig
from gridshare.sim.run import default_ocm
from gridshare.units import w_to_kw

#: Oracle settings per variant (overrides of ``default_ocm``).
VARIANTS = {
    "default": {},
    "box": {"battery_follows": False, "reserve_station_kw": None},
    "follows-guarantee": {"reserve_station_kw": None},
    "follows-11kw": {"reserve_station_kw": 11.0},
    "ramps-all": {"ramp_coverage": 1.0},
    "ramps-0.8": {"ramp_coverage": 0.8},
    "last+reserve": {"forecast": "last"},
    "sessions": {"station_sessions": True},
    "sessions+ramps-all": {"station_sessions": True, "ramp_coverage": 1.0},
    "sessions+ramps-0.8": {"station_sessions": True, "ramp_coverage": 0.8},
    "sessions+last": {"station_sessions": True, "forecast": "last"},
}


def run_variant(name: str, hours: float) -> dict[str, object]:
    """One simulated day with ``VARIANTS[name]``: the measured row."""
    out = Path(tempfile.mkdtemp(prefix=f"gridshare-tradeoff-{name}-"))
    config = SimulationConfig(hours=hours, ocm=default_ocm(**VARIANTS[name]), progress=False)
    started = time.perf_counter()
    sim = Simulation(config, out)
    result = sim.run()
    seconds = time.perf_counter() - started
    s = result.summary
    p_max_kw = [w_to_kw(r.band_w[n][1]) for r in result.intervals for n in sim.station_names]
    return {"variant": name, "nr_operated_outside": s["nr_operated_violations"],
            "nr_operated_load_flows": s["nr_operated_runs"],
            "intervals_settled": s["intervals_settled"],
            "intervals_traded": s["intervals_traded"],
            "ev_delivered_kwh": round(s["ev_energy_delivered_kwh"], 1),
            "ev_needed_kwh": round(s["ev_energy_delivered_kwh"]
                                   + s["ev_energy_missing_at_departure_kwh"], 1),
            "mean_station_p_max_kw": round(float(np.mean(p_max_kw)), 2),
            "battery_discharge_kwh": s["battery_discharge_kwh"],
            "battery_metered_discharge_kwh": round(float(
                np.clip(-sim.flex_kw[:, sim.battery_col], 0, None).sum()) / 60.0, 1),
            "seconds": round(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                        help="variant(s) to run (default: all)")
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    for name in args.variant or list(VARIANTS):
        print(json.dumps(run_variant(name, args.hours)), flush=True)


if __name__ == "__main__":
    main()
