"""The community battery's storage: integer state-of-charge arithmetic (Wh, ppm, W, s).

One model for everyone who tracks the battery's charge: the market dispatches inside it
(``market.battery``) and the oracle keeps its bands inside it (``oracle.soc``), so both
compute the same state of charge from the same energies.

* Power ``P`` in W, consumption (charging) positive, constant over an interval of ``T`` s.
* The energy of a power is ``E(P) = round_half_away(P * T / 3600)`` Wh (``energy_for_power``).
* State of charge ``soc_wh`` (int Wh, DC side). Charging ``E`` Wh (AC) stores
  ``floor(E * eta_c)``; discharging ``E`` Wh (AC) draws ``ceil(E / eta_d)`` from the cells.
  Efficiencies are in parts per million. The rounding is always against the battery, so the
  SoC limits hold with integers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PPM = 1_000_000
SECONDS_PER_HOUR = 3600
#: Defaults of a deployed community battery (``default_storage``): two hours of its rated
#: power, kept between 10 % and 90 %, starting at 50 %, 95 % efficient each way.
DEFAULT_HOURS = 2
DEFAULT_EFFICIENCY_PPM = 950_000


def div_round_half_away(num: int, den: int) -> int:
    """``round(num / den)`` with halves away from zero, exact for ints (``den > 0``)."""
    q = (2 * abs(num) + den) // (2 * den)
    return q if num >= 0 else -q


def energy_for_power(power_w: int, interval_s: int) -> int:
    """Energy in Wh of ``power_w`` over ``interval_s`` (signed)."""
    return div_round_half_away(int(power_w) * int(interval_s), SECONDS_PER_HOUR)


def max_power_for_energy(energy_wh: int, interval_s: int) -> int:
    """Largest ``P >= 0`` W with ``E(P) <= energy_wh`` (``energy_wh >= 0``)."""
    if energy_wh < 0:
        raise ValueError("energy_wh must be >= 0")
    # round(P*T/3600) <= E  <=>  2*P*T < (2E+1)*3600
    return ((2 * energy_wh + 1) * SECONDS_PER_HOUR - 1) // (2 * interval_s)


@dataclass(frozen=True)
class BatteryStorage:
    """Energy capacity and state-of-charge limits (Wh) and efficiencies (ppm) of a battery."""

    capacity_wh: int
    soc_min_wh: int
    soc_max_wh: int
    initial_soc_wh: int
    charge_efficiency_ppm: int = DEFAULT_EFFICIENCY_PPM
    discharge_efficiency_ppm: int = DEFAULT_EFFICIENCY_PPM

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0:
            raise ValueError(f"battery capacity must be positive, got {self.capacity_wh} Wh")
        if not 0 <= self.soc_min_wh <= self.soc_max_wh <= self.capacity_wh:
            raise ValueError(
                f"need 0 <= soc_min_wh ({self.soc_min_wh}) <= soc_max_wh ({self.soc_max_wh}) "
                f"<= capacity_wh ({self.capacity_wh})"
            )
        if not self.soc_min_wh <= self.initial_soc_wh <= self.soc_max_wh:
            raise ValueError(
                f"initial SoC {self.initial_soc_wh} Wh outside [{self.soc_min_wh}, "
                f"{self.soc_max_wh}] Wh"
            )
        for name in ("charge_efficiency_ppm", "discharge_efficiency_ppm"):
            eta = getattr(self, name)
            if not 0 < eta <= PPM:
                raise ValueError(f"{name} must be in (0, {PPM}], got {eta}")

    def soc_after(self, soc_wh: int, energy_wh: int) -> int:
        """SoC (Wh) after trading ``energy_wh`` AC (positive = bought/charged)."""
        if energy_wh >= 0:
            return soc_wh + energy_wh * self.charge_efficiency_ppm // PPM
        return soc_wh - (-energy_wh * PPM + self.discharge_efficiency_ppm - 1) // (
            self.discharge_efficiency_ppm
        )

    def max_charge_wh(self, soc_wh: int) -> int:
        """Largest AC energy E with ``soc + floor(E*eta_c) <= soc_max``."""
        room = self.soc_max_wh - soc_wh
        return ((room + 1) * PPM - 1) // self.charge_efficiency_ppm

    def max_discharge_wh(self, soc_wh: int, floor_wh: int | None = None) -> int:
        """Largest AC energy E with ``soc - ceil(E/eta_d) >= floor`` (default ``soc_min``; a
        floor above ``soc`` allows none)."""
        floor = self.soc_min_wh if floor_wh is None else max(int(floor_wh), self.soc_min_wh)
        return max(soc_wh - floor, 0) * self.discharge_efficiency_ppm // PPM

    def power_range_w(self, soc_wh: int, interval_s: int, floor_wh: int | None = None
                      ) -> tuple[int, int]:
        """Powers (W) the state of charge allows for one interval: ``[-discharge, +charge]``
        (discharge down to ``floor_wh``, default ``soc_min``)."""
        if interval_s <= 0:
            raise ValueError(f"interval length must be positive, got {interval_s} s")
        if not self.soc_min_wh <= soc_wh <= self.soc_max_wh:
            raise ValueError(
                f"SoC {soc_wh} Wh outside [{self.soc_min_wh}, {self.soc_max_wh}] Wh"
            )
        hi = max_power_for_energy(self.max_charge_wh(soc_wh), interval_s)
        lo = -max_power_for_energy(self.max_discharge_wh(soc_wh, floor_wh), interval_s)
        return lo, hi

    def replay_soc_wh(self, powers_w: list[int], interval_s: int) -> int:
        """SoC (Wh) after ``powers_w`` (one constant power per interval) from the initial SoC:
        ``replay_energies_soc_wh`` of their energies ``E(P)``."""
        return self.replay_energies_soc_wh(energy_for_power(p, interval_s) for p in powers_w)

    def replay_energies_soc_wh(self, energies_wh: Iterable[int]) -> int:
        """SoC (Wh) after ``energies_wh`` (AC Wh per interval, charging positive) from the
        initial SoC, clamped to the limits after every interval (``soc_path_wh``)."""
        path = [self.initial_soc_wh, *self.soc_path_wh(energies_wh)]
        return path[-1]

    def soc_path_wh(self, energies_wh: Iterable[int]) -> Iterator[int]:
        """The SoC (Wh) after each of ``energies_wh`` (AC Wh per interval, charging positive)
        from the initial SoC, clamped to the limits after every interval."""
        soc = self.initial_soc_wh
        for energy_wh in energies_wh:
            soc = min(max(self.soc_after(soc, int(energy_wh)), self.soc_min_wh), self.soc_max_wh)
            yield soc


def default_storage(rated_w: int) -> BatteryStorage:
    """The storage of a deployed community battery of rated power ``rated_w`` (W): see
    ``DEFAULT_HOURS`` and ``DEFAULT_EFFICIENCY_PPM``."""
    capacity_wh = DEFAULT_HOURS * int(rated_w)
    return BatteryStorage(capacity_wh, capacity_wh // 10, capacity_wh * 9 // 10, capacity_wh // 2)
