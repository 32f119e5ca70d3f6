"""Product band policy (issue 16): no forced operation, a guaranteed minimum, a fair share, then
efficiency (the paper's Eq. 2-3 objective last).

``BandPolicy`` is opt-in (``compute_bands(..., objective="fair", policy=BandPolicy())``); without
it every objective is the paper's. Per step, with the flexibilities' powers ``x`` (kW):

1. **No forced operation.** A charging station's ``P_min`` is its committed minimum
   (``committed_min_kw[name]``, default 0): the argmin (paper Eq. 3) is taken with every station
   held there, the other devices (the battery) free in their rated range. If even that breaks a
   limit the step is infeasible (the station is never forced on to make room).
2. **Guaranteed minimum** (like section 14a EnWG: a DSO may curtail a controllable device, not
   below 4.2 kW): from the argmin, the largest common fraction ``t`` in [0, 1] with every station
   at ``committed + t (guarantee - committed)`` is found (batched grid refinement).
3. **Fair share of the remaining headroom** (max-min, only from rest): the largest common
   fraction ``lam`` of each device's headroom, ``P_c >= guarantee_c + lam (p_high_c -
   guarantee_c)`` for a station, ``P_c >= rest_c + lam (p_high_c - rest_c)`` for the others
   (the battery's charging); stations of equal rating get equal kW.
4. **Efficiency**: the argmax of the summed power (Eq. 2-3) with those floors.

Where the guarantee needs the battery's discharge, steps 3-4 share only what the rest point
leaves: the stations stay at their guarantee and the battery discharges no more than that needs.
With ``battery_shares`` (the caller's battery has charge to spare above its reserve, and
follows the feeder: it gives only what the stations actually draw) the stations' fair share is
taken with the battery at its most discharge instead, then the argmax.

**Operating sets.** A charger draws 0 or between its minimum-current power
(``station_on_min_kw``, 6 A x 3 x 230 V = 4.14 kW) and its rating: a non-convex set. When the
full guarantee does not fit (``t < 1``), spreading the room evenly would give every station an
inoperable ``P_max`` below 4.14 kW. Then the GA chooses which stations get an operable share:
its genes are snapped into ``{0} u [on, guarantee]`` (battery held at the argmin's value) and it
maximises the served power; the SLP polish refines within the chosen on/off pattern.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from capacity.flexibility import Flexibility, FlexibilityKind

#: Section 14a EnWG: a controllable device is not curtailed below 4.2 kW.
GUARANTEED_MIN_KW = 4.2
#: Minimum charging current 6 A (IEC 61851) on three phases of 230 V: 4.14 kW.
STATION_ON_MIN_KW = 4.14


@dataclass(frozen=True)
class BandPolicy:
    """What a DSO signs: stations' guaranteed minimum and minimum-current power (kW), and the
    vehicles' committed minima per station name (kW, default 0: never forced to consume);
    ``battery_shares``: the battery's discharge may fund the stations' share above their
    guarantee (module docstring)."""

    guaranteed_min_kw: float = GUARANTEED_MIN_KW
    station_on_min_kw: float = STATION_ON_MIN_KW
    committed_min_kw: Mapping[str, float] = field(default_factory=dict)
    battery_shares: bool = False

    def __post_init__(self) -> None:
        values = {"guaranteed_min_kw": self.guaranteed_min_kw,
                  "station_on_min_kw": self.station_on_min_kw,
                  **{f"committed_min_kw[{k!r}]": v for k, v in self.committed_min_kw.items()}}
        for name, value in values.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 kW, got {value!r}")
        if 0 < self.guaranteed_min_kw < self.station_on_min_kw:
            raise ValueError(
                f"guaranteed_min_kw={self.guaranteed_min_kw} is below station_on_min_kw="
                f"{self.station_on_min_kw}: a charger could not draw its guarantee")

    def __hash__(self) -> int:
        """Hashable like the settings that hold it (caches keyed by the oracle's settings)."""
        return hash((self.guaranteed_min_kw, self.station_on_min_kw,
                     tuple(sorted(self.committed_min_kw.items())), self.battery_shares))

    def as_dict(self) -> dict[str, object]:
        """Plain-data form (result metadata)."""
        return {"guaranteed_min_kw": self.guaranteed_min_kw,
                "station_on_min_kw": self.station_on_min_kw,
                "committed_min_kw": dict(self.committed_min_kw),
                "battery_shares": self.battery_shares}


@dataclass(frozen=True)
class PolicyVectors:
    """The policy per flexibility (n_flex,): ``station`` mask, ``floor_kw`` (P_min of a station:
    its committed minimum), ``guarantee_kw`` and ``on_kw`` (0 where not a station), and
    ``BandPolicy.battery_shares``."""

    station: np.ndarray
    floor_kw: np.ndarray
    guarantee_kw: np.ndarray
    on_kw: np.ndarray
    battery_shares: bool = False


def policy_vectors(policy: BandPolicy, flexibilities: Sequence[Flexibility],
                   objective: str = "fair") -> PolicyVectors:
    """Check ``policy`` against the objective (it is the "fair" one) and the devices' ratings;
    return it per device. A station rated [0, 0] kW (switched off: no vehicle connected) gets
    no floor and no guarantee."""
    if objective != "fair":
        raise ValueError(f"a band policy needs objective='fair', got {objective!r}")
    names = [f.name for f in flexibilities]
    unknown = sorted(set(policy.committed_min_kw) - set(names))
    if unknown:
        raise ValueError(f"committed_min_kw names unknown flexibilities {unknown}")
    station = np.array([f.kind == FlexibilityKind.CHARGING_STATION for f in flexibilities])
    floor = np.zeros(len(names))
    guarantee = np.zeros(len(names))
    for i, flex in enumerate(flexibilities):
        committed = float(policy.committed_min_kw.get(flex.name, 0.0))
        if not station[i]:
            if flex.name in policy.committed_min_kw:
                raise ValueError(f"committed_min_kw: {flex.name!r} is not a charging station")
            continue
        if flex.p_high_kw == 0:  # switched off (no vehicle connected): nothing to guarantee
            continue
        if flex.p_low_kw > 0:
            raise ValueError(f"station {flex.name!r}: p_low_kw={flex.p_low_kw} > 0 forces it on")
        for label, value in (("guaranteed_min_kw", policy.guaranteed_min_kw),
                             ("station_on_min_kw", policy.station_on_min_kw),
                             (f"committed_min_kw[{flex.name!r}]", committed)):
            if value > flex.p_high_kw:
                raise ValueError(f"{label}={value} kW exceeds station {flex.name!r}'s rating "
                                 f"p_high_kw={flex.p_high_kw}")
        if 0 < committed < policy.station_on_min_kw:
            raise ValueError(f"committed_min_kw[{flex.name!r}]={committed} is inside the "
                             f"charger's dead zone (0, {policy.station_on_min_kw}) kW")
        floor[i] = committed
        guarantee[i] = max(committed, policy.guaranteed_min_kw)
    on = np.where(station, policy.station_on_min_kw, 0.0)
    return PolicyVectors(station, floor, guarantee, on, policy.battery_shares)


def snap_to_operating_set(x_kw: np.ndarray, on_kw: np.ndarray, upper_kw: np.ndarray
                          ) -> np.ndarray:
    """Map settings (S, n_flex) into each charger's operating set ``{0} u [on, upper]``: values
    in the dead zone ``(0, on)`` go to 0 below ``on / 2`` and to ``on`` above (kW)."""
    dead = (on_kw > 0) & (x_kw > 0) & (x_kw < on_kw)
    up = np.minimum(on_kw, upper_kw)
    return np.where(dead, np.where(x_kw >= 0.5 * on_kw, up, 0.0), x_kw)
