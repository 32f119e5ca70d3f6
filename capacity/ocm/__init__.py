"""Optimal Capacity Management (Rao et al. 2021): certified P_min..P_max bands per flexibility.

``compute_bands`` is the entry point; ``capacity.ocm.ga`` holds the DEAP GA, ``polish`` the SLP
refinement, ``bands`` the objectives and band formation, ``certify`` the Eq. 14 check,
``result`` the ``BandResult``.
"""

from capacity.ocm.bands import OBJECTIVES
from capacity.ocm.core import compute_bands, helm_voltage_solver, loading_limits
from capacity.ocm.ga import GaSettings
from capacity.ocm.policy import BandPolicy
from capacity.ocm.result import BandResult

__all__ = [
    "OBJECTIVES",
    "BandPolicy",
    "BandResult",
    "GaSettings",
    "compute_bands",
    "helm_voltage_solver",
    "loading_limits",
]
