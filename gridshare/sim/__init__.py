"""The main job: a simulated community day end to end (``gridshare simulate``).

``run`` orchestrates (deploy, meters, oracle, orders, clearing, settlement, aggregator),
``agents`` are the households and charging stations, ``community_case`` the aggregator's view of
the community, ``verify`` the checks after the day. The report is ``gridshare.sim.report``.
"""

from gridshare.sim.run import Simulation, SimulationConfig, SimulationResult

__all__ = ["Simulation", "SimulationConfig", "SimulationResult"]
