"""One short simulated run shared by the simulation tests of a pytest session (it costs ~1 min).

Noon on heimschuh-like: the warm-up interval 11:30, then three traded intervals 11:45..12:30,
so the run has PV surplus (local trades, the battery charging), an hour boundary where the
aggregator plans the next hour, and the Newton-Raphson check of a few sampled minutes.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from gridshare.sim import Simulation, SimulationConfig, SimulationResult
from gridshare.sim.report import write_report

CONFIG = SimulationConfig(hours=1.0, start_hour=11.5, seed=0, nr_steps=3, nr_random_points=5,
                          progress=False)


@functools.cache
def noon_run() -> tuple[Simulation, SimulationResult, Path]:
    """(simulation, result, report index) of ``CONFIG`` on the embedded chain, computed once."""
    out = Path(tempfile.mkdtemp(prefix="gridshare-simulate-"))
    sim = Simulation(CONFIG, out)
    result = sim.run()
    index = write_report(result, out)
    return sim, result, index
