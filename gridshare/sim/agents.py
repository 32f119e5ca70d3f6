"""Simulated community members: households (load, PV) and EV charging stations.

Units: power kW, energy kWh (floats) or Wh (ints, on-chain), prices EUR/kWh or micro-euro per
kWh (ints, via ``gridshare.units``). Minutes are minutes of the profile day (0..1439); a market
interval covers ``minutes_per_interval`` of them.

* Households: customer ``i`` of the feeder is prosumer ``prosumer_i``. Its order for an interval
  is its metered net energy of that interval (load - PV from the seeded day profiles, the same
  numbers the meter simulator posts): a buy when positive, a sell when negative. Each household
  has a fixed limit price drawn once from the seed: buyers bid between the retail tariff and
  ``BUY_DISCOUNT_EUR_PER_KWH`` below it, sellers ask between the feed-in tariff and
  ``SELL_MARKUP_EUR_PER_KWH`` above it. Energy that finds no counterparty within the limit stays
  unmatched in the market (the member's supplier balances it; the meters still see it).
* Charging stations: each station ``CS*`` is operated by an extra market member
  (``prosumer_<n_customers + j>``) that buys at the retail tariff (the vehicles need the energy)
  the energy its planned power takes in the interval. Vehicles are charging sessions (arrival,
  departure, energy needed, charger limit), seeded; a station's power is the aggregator's plan
  clipped to the station's band and to what the connected vehicles still need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gridshare.units import kw_to_w, kwh_to_wh

MINUTES_PER_DAY = 1440
#: A station's plan within this of its band bound (kW) was held back by that band.
PLAN_BOUND_TOL_KW = 1e-6
BUY_DISCOUNT_EUR_PER_KWH = 0.10
SELL_MARKUP_EUR_PER_KWH = 0.10
VEHICLE_BATTERY_KWH = 60.0


@dataclass(frozen=True)
class EvSession:
    """One vehicle at one station: connected minutes [arrive, depart), energy it needs (kWh)
    and the most power it takes (kW)."""

    station: str
    arrive_min: int
    depart_min: int
    energy_kwh: float
    p_max_kw: float
    arrival_kwh: float

    def __post_init__(self) -> None:
        if not 0 <= self.arrive_min < self.depart_min <= MINUTES_PER_DAY:
            raise ValueError(f"EV session at {self.station}: need 0 <= arrive < depart <= 1440, "
                             f"got {self.arrive_min}..{self.depart_min}")
        if self.energy_kwh < 0 or self.p_max_kw <= 0:
            raise ValueError(f"EV session at {self.station}: energy must be >= 0 and p_max > 0")


def ev_sessions(stations: Sequence[tuple[str, float]], seed: int) -> list[EvSession]:
    """Seeded sessions for ``stations`` = (name, rated kW): the first station is residential
    (a vehicle plugged in overnight until the morning, another from the evening on), the others
    public (a daytime visitor and an evening visitor)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7_771]))
    out: list[EvSession] = []
    for j, (name, rated_kw) in enumerate(stations):
        p_max = float(min(rated_kw, 11.0 if j == 0 else rated_kw))
        if j == 0:
            windows = [(0, int(rng.integers(6 * 60, 8 * 60)), rng.uniform(10, 20)),
                       (int(rng.integers(17 * 60, 19 * 60)), MINUTES_PER_DAY,
                        rng.uniform(25, 40))]
        else:
            windows = [(int(rng.integers(9 * 60, 11 * 60)), int(rng.integers(13 * 60, 15 * 60)),
                        rng.uniform(15, 30)),
                       (int(rng.integers(18 * 60, 20 * 60)), MINUTES_PER_DAY,
                        rng.uniform(20, 35))]
        for arrive, depart, need in windows:
            hours = (depart - arrive) / 60.0
            need = float(min(need, 0.8 * p_max * hours))  # reachable at 80 % of the charger
            out.append(EvSession(name, arrive, depart, round(need, 3), p_max,
                                 round(float(rng.uniform(0.2, 0.4)) * VEHICLE_BATTERY_KWH, 3)))
    return out


class StationState:
    """Energy still needed by each connected vehicle of one station (kWh)."""

    def __init__(self, name: str, sessions: Sequence[EvSession]) -> None:
        self.name = name
        self.sessions = [s for s in sessions if s.station == name]
        self.remaining_kwh = np.array([s.energy_kwh for s in self.sessions], dtype=float)
        self.delivered_kwh = np.zeros(len(self.sessions))

    def connected(self, minute: int) -> np.ndarray:
        return np.array([s.arrive_min <= minute < s.depart_min for s in self.sessions],
                        dtype=bool)

    def max_power_kw(self, first_minute: int, n_minutes: int) -> float:
        """Most power (kW) the connected vehicles take over the interval starting at
        ``first_minute`` (needs and charger limits; a vehicle leaving within it counts for the
        minutes it is there)."""
        total = 0.0
        for k, s in enumerate(self.sessions):
            here = max(0, min(s.depart_min, first_minute + n_minutes)
                       - max(s.arrive_min, first_minute))
            if here and self.remaining_kwh[k] > 0:
                total += min(s.p_max_kw * here / n_minutes,
                             self.remaining_kwh[k] * 60.0 / n_minutes)
        return total

    def deliver(self, first_minute: int, n_minutes: int, p_kw: float) -> None:
        """Split ``p_kw`` over the interval among the connected vehicles (earliest departure
        first) and book the energy."""
        energy = p_kw * n_minutes / 60.0
        order = sorted(range(len(self.sessions)), key=lambda k: self.sessions[k].depart_min)
        for k in order:
            s = self.sessions[k]
            here = max(0, min(s.depart_min, first_minute + n_minutes)
                       - max(s.arrive_min, first_minute))
            take = min(energy, self.remaining_kwh[k], s.p_max_kw * here / 60.0)
            if take > 0:
                self.remaining_kwh[k] -= take
                self.delivered_kwh[k] += take
                energy -= take

    def fleet_energy_kwh(self, minute: int, slot_min: int = 15) -> float:
        """Energy the aggregator's station fleet holds at the slot boundary ``minute`` (kWh), as
        ``gridshare.sim.community_case.cs_fleet`` accounts it: a vehicle enters with its
        arrival energy at the start of its arrival slot and leaves with its need at the start of
        the slot after its departure; what it took beyond its need stays in the fleet."""
        t = minute // slot_min
        total = 0.0
        for k, s in enumerate(self.sessions):
            a, d = s.arrive_min // slot_min, -(-s.depart_min // slot_min)
            if (a < t or a == 0) and t <= d:
                total += s.arrival_kwh + self.delivered_kwh[k]
            elif t > d:
                total += max(0.0, self.delivered_kwh[k] - s.energy_kwh)
        return total

    def unmet_kwh(self, minute: int) -> float:
        """Energy still missing of the vehicles that left before ``minute`` (kWh)."""
        gone = np.array([s.depart_min <= minute for s in self.sessions], dtype=bool)
        return float(self.remaining_kwh[gone].sum()) if gone.any() else 0.0


def station_power_w(plan_kw: float, bound_kw: float, need_kw: float,
                    band_w: tuple[int, int]) -> int:
    """A station's power (W) in an interval: its plan (kW), clipped to what its vehicles take
    (``need_kw``, ``StationState.max_power_kw``) and to its band ``(P_min, P_max)`` W. A plan at
    the bound it was planned with (``bound_kw``: the older band that held it back; 0 for a plan
    made without the bands, which made a vehicle's target unreachable) takes what the band
    allows, up to the vehicles' need."""
    held_back = plan_kw >= bound_kw - PLAN_BOUND_TOL_KW
    target_kw = need_kw if held_back else min(plan_kw, need_kw)
    return int(np.clip(kw_to_w(target_kw), band_w[0], band_w[1]))


def limit_prices_eur_per_kwh(n_members: int, retail_eur_per_kwh: float,
                             feed_in_eur_per_kwh: float, seed: int
                             ) -> tuple[np.ndarray, np.ndarray]:
    """(buy limit, sell limit) per household, EUR/kWh (see module docstring)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4_242]))
    buy = retail_eur_per_kwh - BUY_DISCOUNT_EUR_PER_KWH * rng.uniform(0, 1, n_members)
    sell = feed_in_eur_per_kwh + SELL_MARKUP_EUR_PER_KWH * rng.uniform(0, 1, n_members)
    return np.round(buy, 4), np.round(sell, 4)


def interval_net_wh(load_kw: np.ndarray, pv_kw: np.ndarray, minutes: np.ndarray) -> np.ndarray:
    """Net energy (Wh, int) per customer over ``minutes``: sum of (load - PV) kW / 60, in Wh."""
    net_kwh = (load_kw[minutes] - pv_kw[minutes]).sum(axis=0) / 60.0
    return kwh_to_wh(net_kwh)
