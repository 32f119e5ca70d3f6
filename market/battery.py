"""The community battery: dispatch inside its band and state of charge, shares of its owners.

Integer model (exactly reproducible by anyone replaying the chain); the energy and state-of-charge
arithmetic is ``capacity.storage``'s (the oracle keeps its bands inside the same model):

* Power ``P`` in W, consumption (charging) positive, constant over an interval of ``T`` s.
* The energy traded for a power is ``E(P) = round_half_away(P * T / 3600)`` Wh. The market
  contract checks ``|E(P) - P*T/3600| <= 1`` Wh; with this rounding the difference is at most
  0.5 Wh for every ``P`` and ``T`` (``energy_for_power``), so the check always passes.
* State of charge ``soc_wh`` (int Wh, DC side): ``capacity.storage.BatteryStorage``. Before an
  interval it follows the battery's meter: the metered energy of every interval whose meter
  totals are written, the traded ``E(P)`` of the others settled (``market.chain.MarketChain.
  soc_before``).
* Dispatch: the battery wants to absorb the members' residual ``R`` Wh (positive = surplus to
  charge, negative = shortfall to discharge), i.e. the power ``P`` nearest ``R*3600/T`` with
  ``|E(P)| <= |R|``; this is clipped to the band ``[P_min, P_max]`` (from the capacity contract)
  intersected with the powers the SoC allows. If that set is empty, :class:`BatteryInfeasibleError`.
  A band that forces a discharge (``P_max < 0``: the grid needs the battery's injection) is
  met with exactly ``P_max``, the least discharge it forces, whatever the residual: the charge
  is kept for the grid's need (a battery that follows the feeder gives more only while the
  feeder needs it, ``OcmSettings.battery_follows``), the members' shortfall beyond it is bought
  from the grid.
  When the band forces more than the residual (e.g. ``P_min > 0`` with no surplus), the
  difference is bought from or sold to the grid by the settlement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from eth_utils import to_checksum_address

from capacity.storage import (
    SECONDS_PER_HOUR,
    BatteryStorage,
    div_round_half_away,
    energy_for_power,
)

BPS = 10_000


class BatteryInfeasibleError(ValueError):
    """No battery power satisfies both the band and the state-of-charge limits."""


def power_for_residual(residual_wh: int, interval_s: int) -> int:
    """Power nearest ``residual_wh * 3600 / T`` whose energy does not exceed the residual."""
    p = div_round_half_away(residual_wh * SECONDS_PER_HOUR, interval_s)
    if abs(energy_for_power(p, interval_s)) > abs(residual_wh):
        p -= 1 if p > 0 else -1
    return p


@dataclass(frozen=True)
class BatteryParams:
    """Static data of the community battery.

    ``account`` is its on-chain address (it trades under it); energies in Wh; efficiencies in
    parts per million; ``shares_bps`` maps owners to basis points (sum <= 10,000; the rest is
    the community's, left unallocated).
    """

    account: str
    capacity_wh: int
    soc_min_wh: int
    soc_max_wh: int
    initial_soc_wh: int
    charge_efficiency_ppm: int = 950_000
    discharge_efficiency_ppm: int = 950_000
    shares_bps: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", to_checksum_address(self.account))
        shares = {to_checksum_address(k): int(v) for k, v in dict(self.shares_bps).items()}
        object.__setattr__(self, "shares_bps", shares)
        _ = self.storage  # checks the energies and efficiencies
        if any(v < 0 for v in shares.values()) or sum(shares.values()) > BPS:
            raise ValueError(f"battery shares must be >= 0 and sum to <= {BPS} bps: {shares}")

    @cached_property
    def storage(self) -> BatteryStorage:
        """The storage model (``capacity.storage``) of these energies and efficiencies."""
        return BatteryStorage(self.capacity_wh, self.soc_min_wh, self.soc_max_wh,
                              self.initial_soc_wh, self.charge_efficiency_ppm,
                              self.discharge_efficiency_ppm)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BatteryParams:
        """Load from a JSON object with the field names of this class."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown battery fields: {sorted(unknown)}")
        return cls(**data)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (inverse of :meth:`from_dict`)."""
        return {
            "account": self.account,
            "capacity_wh": self.capacity_wh,
            "soc_min_wh": self.soc_min_wh,
            "soc_max_wh": self.soc_max_wh,
            "initial_soc_wh": self.initial_soc_wh,
            "charge_efficiency_ppm": self.charge_efficiency_ppm,
            "discharge_efficiency_ppm": self.discharge_efficiency_ppm,
            "shares_bps": dict(self.shares_bps),
        }

    def soc_after(self, soc_wh: int, energy_wh: int) -> int:
        """SoC (Wh) after trading ``energy_wh`` AC (``BatteryStorage.soc_after``)."""
        return self.storage.soc_after(soc_wh, energy_wh)

    def max_charge_wh(self, soc_wh: int) -> int:
        return self.storage.max_charge_wh(soc_wh)

    def max_discharge_wh(self, soc_wh: int) -> int:
        return self.storage.max_discharge_wh(soc_wh)


@dataclass(frozen=True)
class BatteryDispatch:
    """The battery's decision for one interval (W, Wh, SoC in Wh)."""

    power_w: int
    energy_wh: int
    soc_before_wh: int
    soc_after_wh: int
    feasible_min_w: int
    feasible_max_w: int


def soc_power_range(params: BatteryParams, soc_wh: int, interval_s: int) -> tuple[int, int]:
    """Powers (W) the state of charge allows for one interval: ``[-discharge, +charge]``."""
    return params.storage.power_range_w(soc_wh, interval_s)


def dispatch(
    params: BatteryParams,
    soc_wh: int,
    band_w: tuple[int, int],
    residual_wh: int,
    interval_s: int,
    reserve_wh: int | None = None,
) -> BatteryDispatch:
    """Battery power for one interval absorbing as much of ``residual_wh`` as allowed; a band
    that forces a discharge (``P_max < 0``) is met with exactly the least discharge it forces.

    ``band_w`` is ``(P_min, P_max)`` in W from the capacity contract; ``reserve_wh`` the
    oracle's reserve for the interval (None: none): the market discharges no further than
    keeps it, unless the band forces more.
    """
    p_min_w, p_max_w = int(band_w[0]), int(band_w[1])
    if p_min_w > p_max_w:
        raise ValueError(f"band P_min {p_min_w} W > P_max {p_max_w} W")
    lo_soc, hi_soc = soc_power_range(params, soc_wh, interval_s)
    lo, hi = max(p_min_w, lo_soc), min(p_max_w, hi_soc)
    if lo > hi:
        raise BatteryInfeasibleError(
            f"no battery power fits the band [{p_min_w}, {p_max_w}] W and the SoC limits "
            f"(SoC {soc_wh} Wh allows [{lo_soc}, {hi_soc}] W); the interval cannot be settled"
        )
    target_w = hi if p_max_w < 0 else power_for_residual(residual_wh, interval_s)
    if reserve_wh is not None:
        keep_w = params.storage.power_range_w(soc_wh, interval_s, floor_wh=reserve_wh)[0]
        target_w = max(target_w, min(keep_w, hi))
    power_w = min(max(target_w, lo), hi)
    energy_wh = energy_for_power(power_w, interval_s)
    return BatteryDispatch(power_w, energy_wh, soc_wh, params.soc_after(soc_wh, energy_wh), lo, hi)


def split_by_shares(amount: int, shares_bps: Mapping[str, int]) -> dict[str, int]:
    """Each owner's part of ``amount`` (an int: Wh or nano-euro): ``trunc(amount*bps/10000)``.

    Truncation toward zero means no owner is ever credited more than its exact share; the
    remainder (at most one unit per owner plus the unowned basis points) stays with the
    battery account.
    """
    out = {}
    for owner, bps in sorted(shares_bps.items()):
        part = abs(amount) * int(bps) // BPS
        out[owner] = part if amount >= 0 else -part
    return out
