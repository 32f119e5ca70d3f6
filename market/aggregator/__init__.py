"""Hour-ahead aggregator: the H-ERM MILP of Canizes et al. (2022), rolled through the day.

Public API: ``synthetic_case(seed=0)`` builds the paper-size case; ``schedule_hour(case, hour)``
schedules one hour in four 15-minute slots and returns a :class:`ScheduleResult` with ``cost``,
``solve_time_s`` and ``milp`` (the model for ``scipy.optimize.milp(**result.milp)``).
"""

from market.aggregator.case import Case, DayAheadPlan, StorageFleet
from market.aggregator.model import ModelOptions
from market.aggregator.schedule import ScheduleResult, schedule_day, schedule_hour
from market.aggregator.solve import SolverOptions
from market.aggregator.synthetic import synthetic_case, synthetic_data

__all__ = [
    "Case",
    "DayAheadPlan",
    "ModelOptions",
    "ScheduleResult",
    "SolverOptions",
    "StorageFleet",
    "schedule_day",
    "schedule_hour",
    "synthetic_case",
    "synthetic_data",
]
