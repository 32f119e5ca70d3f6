"""Deviations: what the meters measured against what was traded, settled with the grid.

After an interval has ended the oracle writes each device's metered energy
(``GridCapacity.writeMeterTotals``, rule in :mod:`gridshare.chain.metering`). Per account whose
meter device has a total (members by ``memberOfDevice``, the battery by its device):

* traded energy ``T`` (Wh, bought positive): the fills of its orders in the interval's
  settlement (buy fills positive, sell fills negative); for the battery its bought minus sold
  energy; 0 where the interval's trades were not settled;
* metered energy ``M`` (Wh, consumption positive) from the totals;
* deviation ``D = M - T``: bought from the grid at the imbalance-buy tariff when positive, sold
  to it at the imbalance-sell tariff when negative; the account pays ``D * price`` nano-euro
  (receives when negative), and the grid exchange changes by the opposite, so the sum of all
  balances still equals ``gridExchangeNanoEur``.

A former member (removed) is settled only where it traded. This module is the contract's rule
in Python, for replays and statements; energies in Wh, prices in micro-euro per kWh, money in
nano-euro.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from eth_utils import to_checksum_address

from market.orders import BookEntry, Side


@dataclass(frozen=True, order=True)
class Deviation:
    """One account's metered against traded energy in one interval (``DeviationSettled``)."""

    interval: int
    account: str
    device_id: int
    traded_wh: int
    metered_wh: int
    price_micro_eur_per_kwh: int

    @property
    def deviation_wh(self) -> int:
        """Metered minus traded energy, Wh (positive: bought from the grid)."""
        return self.metered_wh - self.traded_wh

    @property
    def paid_nano_eur(self) -> int:
        """What the account paid for its deviation, nano-euro (negative: received)."""
        return self.deviation_wh * self.price_micro_eur_per_kwh


def traded_per_account(book: Sequence[BookEntry], fills: Sequence[int],
                       battery_account: str | None = None,
                       battery_bought_wh: int = 0) -> dict[str, int]:
    """Traded Wh (bought positive) per account from a settlement's book and fills."""
    if len(fills) not in (0, len(book)):
        raise ValueError(f"{len(fills)} fills for a book of {len(book)} orders")
    out: dict[str, int] = {}
    for (prosumer, side, _, _), filled in zip(book, fills, strict=False):
        if filled:
            account = to_checksum_address(prosumer)
            out[account] = out.get(account, 0) + (filled if side == Side.BUY else -filled)
    if battery_account is not None and battery_bought_wh:
        account = to_checksum_address(battery_account)
        out[account] = out.get(account, 0) + battery_bought_wh
    return out


def expected_deviations(
    interval: int,
    totals: Mapping[int, int],
    traded: Mapping[str, int],
    member_of_device: Mapping[int, str],
    former: Collection[str],
    imbalance_buy_micro_eur_per_kwh: int,
    imbalance_sell_micro_eur_per_kwh: int,
) -> list[Deviation]:
    """The deviations ``settleDeviations`` books for ``totals`` ({device: Wh}), in device order.

    Raises ValueError when an account traded but has no total for its device (the contract's
    ``NoMeterTotal``).
    """
    device_of = {to_checksum_address(a): d for d, a in member_of_device.items()}
    missing = [a for a, t in traded.items() if device_of.get(a) not in totals]
    if missing:
        raise ValueError(f"interval {interval}: no meter total for traders {missing}")
    gone = {to_checksum_address(a) for a in former}
    out = []
    for device in sorted(totals):
        account = member_of_device.get(device)
        if account is None:
            continue
        account = to_checksum_address(account)
        if account in gone and account not in traded:
            continue
        t, m = traded.get(account, 0), totals[device]
        price = (imbalance_buy_micro_eur_per_kwh if m - t > 0
                 else imbalance_sell_micro_eur_per_kwh)
        out.append(Deviation(int(interval), account, int(device), t, m, price))
    return out
