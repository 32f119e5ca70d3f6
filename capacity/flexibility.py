"""Flexibilities: the controllable devices that receive OCM bands (paper Eq. 4)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class FlexibilityKind(StrEnum):
    """What a flexibility is; the capacity contract stores the same kinds."""

    COMMUNITY_BATTERY = "community_battery"
    CHARGING_STATION = "charging_station"
    OTHER = "other"


@dataclass(frozen=True)
class Flexibility:
    """A controllable device at a bus with its rated active-power range (paper Eq. 4).

    Powers in kW, consumption positive: a charging station has ``p_low_kw = 0``, a battery
    ``p_low_kw < 0`` (it can inject).
    """

    name: str
    bus_id: int
    p_low_kw: float
    p_high_kw: float
    kind: FlexibilityKind = FlexibilityKind.OTHER

    def __post_init__(self) -> None:
        if not (math.isfinite(self.p_low_kw) and math.isfinite(self.p_high_kw)):
            raise ValueError(f"flexibility {self.name!r}: rated range must be finite")
        if self.p_low_kw > self.p_high_kw:
            raise ValueError(
                f"flexibility {self.name!r}: p_low_kw={self.p_low_kw} > p_high_kw={self.p_high_kw}"
            )
