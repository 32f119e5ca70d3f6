"""One feeder of the fleet as a worker sees it: network, flexibilities and day profile forecast.

A ``FeederModel`` is what the cluster ships to a worker once and keeps there while the feeder's
hours are computed. It holds the network in the project's feeder-file form
(``capacity.feeder_io``, exact round trip) and builds the ``Feeder`` lazily, once per process: a
``Feeder`` caches HELM's factorisation after the first load flow, which makes later hours
cheaper but cannot be pickled, so the cache never travels (``__getstate__``). Every process,
whether it built the model or received it, solves on a ``Feeder`` rebuilt from the same dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from capacity.feeder_io import feeder_from_dict, feeder_to_dict
from capacity.grid import Feeder
from capacity.profiles import DayProfiles
from oracle.forecast import ProfileForecast


@dataclass(frozen=True, eq=False)
class FeederModel:
    """A feeder of the fleet: ``name`` (file stem or variant name), ``feeder_data``
    (``capacity.feeder_io`` dict, flexibilities included) and ``forecast`` (the oracle's day
    profile forecast: (1440, n_bus) W / var per minute)."""

    name: str
    feeder_data: dict[str, Any]
    forecast: ProfileForecast
    _built: list[Feeder] = field(default_factory=list, repr=False)

    @property
    def feeder(self) -> Feeder:
        """The ``Feeder`` (built from ``feeder_data`` on first use in this process)."""
        if not self._built:
            self._built.append(feeder_from_dict(self.feeder_data))
        return self._built[0]

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the per-process ``Feeder`` (its HELM cache is not picklable)."""
        state = dict(self.__dict__)
        state["_built"] = []
        return state


def make_model(name: str, feeder: Feeder, profiles: DayProfiles) -> FeederModel:
    """Check and pack a feeder and its day profiles (ValueError without flexibilities or when
    the profile's buses are not the feeder's)."""
    if not feeder.flexibilities:
        raise ValueError(f"feeder {name!r} has no flexibilities: there is no band to compute")
    if not np.array_equal(np.asarray(profiles.bus_ids), feeder.bus_ids):
        raise ValueError(f"feeder {name!r}: the day profile's buses are not the feeder's")
    return FeederModel(name, feeder_to_dict(feeder), ProfileForecast.from_profiles(profiles))
