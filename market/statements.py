"""Per-member statements from settled trades and deviations (``TradeSettled`` and
``DeviationSettled`` events or off-chain results).

Energy in Wh, money in nano-euro (ints; ``gridshare.units.nano_eur_to_eur`` for display). A
member's ``net_nano_eur`` over the statement's intervals (trades and deviations) equals the
change of its on-chain ``balanceOf``. The battery part is the member's share of the battery
account's energy and money over the same intervals, ``trunc(total * share_bps / 10000)``
(:func:`market.battery.split_by_shares`); it is informative: on-chain the battery's money stays
on the battery account. :func:`interval_lines` gives a member's ordered, traded, metered and
deviation energy per interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from eth_utils import to_checksum_address

from gridshare.units import nano_eur_to_eur, wh_to_kwh
from market.battery import split_by_shares
from market.deviations import Deviation
from market.orders import Order, Side
from market.settlement import GRID_ADDRESS, Trade


@dataclass(frozen=True)
class MemberStatement:
    """What one member traded over a set of intervals (Wh and nano-euro)."""

    member: str
    intervals: tuple[int, ...]
    bought_local_wh: int = 0
    sold_local_wh: int = 0
    from_battery_wh: int = 0
    to_battery_wh: int = 0
    from_grid_wh: int = 0
    to_grid_wh: int = 0
    paid_local_nano_eur: int = 0
    received_local_nano_eur: int = 0
    paid_battery_nano_eur: int = 0
    received_battery_nano_eur: int = 0
    paid_grid_nano_eur: int = 0
    received_grid_nano_eur: int = 0
    imbalance_bought_wh: int = 0
    imbalance_sold_wh: int = 0
    paid_imbalance_nano_eur: int = 0
    received_imbalance_nano_eur: int = 0
    battery_share_bps: int = 0
    battery_share_charge_wh: int = 0
    battery_share_discharge_wh: int = 0
    battery_share_net_nano_eur: int = 0

    @property
    def net_nano_eur(self) -> int:
        """Money received minus money paid (= change of the on-chain balance)."""
        return (self.received_local_nano_eur + self.received_battery_nano_eur
                + self.received_grid_nano_eur + self.received_imbalance_nano_eur
                - self.paid_local_nano_eur - self.paid_battery_nano_eur
                - self.paid_grid_nano_eur - self.paid_imbalance_nano_eur)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict including ``net_nano_eur``."""
        out = asdict(self)
        out["intervals"] = list(self.intervals)
        out["net_nano_eur"] = self.net_nano_eur
        return out

    def format_text(self) -> str:
        """A human-readable table (kWh and EUR)."""
        iv = self.intervals
        span = f"{iv[0]}..{iv[-1]} ({len(iv)} settled)" if iv else "none settled"

        def row(label: str, wh: int, paid: int, received: int) -> str:
            eur = nano_eur_to_eur(received - paid)
            return f"  {label:<22}{wh_to_kwh(wh):>12.3f} kWh {eur:>+12.4f} EUR"

        lines = [
            f"statement of {self.member}, intervals {span}",
            row("bought locally", self.bought_local_wh, self.paid_local_nano_eur, 0),
            row("sold locally", self.sold_local_wh, 0, self.received_local_nano_eur),
            row("from battery", self.from_battery_wh, self.paid_battery_nano_eur, 0),
            row("to battery", self.to_battery_wh, 0, self.received_battery_nano_eur),
            row("from grid", self.from_grid_wh, self.paid_grid_nano_eur, 0),
            row("to grid", self.to_grid_wh, 0, self.received_grid_nano_eur),
            row("imbalance bought", self.imbalance_bought_wh, self.paid_imbalance_nano_eur, 0),
            row("imbalance sold", self.imbalance_sold_wh, 0, self.received_imbalance_nano_eur),
            f"  {'net':<22}{'':>16} {nano_eur_to_eur(self.net_nano_eur):>+12.4f} EUR",
        ]
        if self.battery_share_bps:
            lines.append(
                f"  battery share {self.battery_share_bps / 100:.2f} %: charged "
                f"{wh_to_kwh(self.battery_share_charge_wh):.3f} kWh, discharged "
                f"{wh_to_kwh(self.battery_share_discharge_wh):.3f} kWh, net "
                f"{nano_eur_to_eur(self.battery_share_net_nano_eur):+.4f} EUR"
            )
        return "\n".join(lines)


def member_statement(
    member: str,
    settled: Iterable[tuple[int, Sequence[Trade]]],
    battery_account: str,
    shares_bps: Mapping[str, int] | None = None,
    deviations: Iterable[Deviation] = (),
) -> MemberStatement:
    """Statement of ``member`` over ``settled`` = ``(interval, trades)`` pairs and the
    ``deviations`` of those intervals (others' and other intervals' are ignored)."""
    me = to_checksum_address(member)
    battery = to_checksum_address(battery_account)
    if me in (battery, GRID_ADDRESS):
        raise ValueError(f"{me} is the battery or the grid, not a member")
    acc = dict.fromkeys(
        ["bought_local_wh", "sold_local_wh", "from_battery_wh", "to_battery_wh", "from_grid_wh",
         "to_grid_wh", "paid_local_nano_eur", "received_local_nano_eur", "paid_battery_nano_eur",
         "received_battery_nano_eur", "paid_grid_nano_eur", "received_grid_nano_eur"], 0)
    batt_charge = batt_discharge = batt_money = 0
    intervals = []
    for interval, trades in settled:
        intervals.append(int(interval))
        for t in trades:
            buyer, seller = to_checksum_address(t.buyer), to_checksum_address(t.seller)
            amount = t.energy_wh * t.price_micro_eur_per_kwh
            if buyer == battery:
                batt_charge += t.energy_wh
                batt_money -= amount
            if seller == battery:
                batt_discharge += t.energy_wh
                batt_money += amount
            if me not in (buyer, seller):
                continue
            other = seller if buyer == me else buyer
            kind = "grid" if other == GRID_ADDRESS else "battery" if other == battery else "local"
            if buyer == me:
                key = {"local": "bought_local_wh", "battery": "from_battery_wh",
                       "grid": "from_grid_wh"}[kind]
                acc[key] += t.energy_wh
                acc[f"paid_{kind}_nano_eur"] += amount
            else:
                key = {"local": "sold_local_wh", "battery": "to_battery_wh",
                       "grid": "to_grid_wh"}[kind]
                acc[key] += t.energy_wh
                acc[f"received_{kind}_nano_eur"] += amount
    acc |= _imbalance(me, set(intervals), deviations)
    shares = {to_checksum_address(k): int(v) for k, v in (shares_bps or {}).items()}
    bps = shares.get(me, 0)
    one = {me: bps}
    return MemberStatement(
        member=me,
        intervals=tuple(sorted(intervals)),
        battery_share_bps=bps,
        battery_share_charge_wh=split_by_shares(batt_charge, one)[me],
        battery_share_discharge_wh=split_by_shares(batt_discharge, one)[me],
        battery_share_net_nano_eur=split_by_shares(batt_money, one)[me],
        **acc,
    )


def _imbalance(member: str, intervals: set[int], deviations: Iterable[Deviation]
               ) -> dict[str, int]:
    """A member's imbalance energy and money over ``intervals``."""
    out = dict.fromkeys(["imbalance_bought_wh", "imbalance_sold_wh", "paid_imbalance_nano_eur",
                         "received_imbalance_nano_eur"], 0)
    for d in deviations:
        if to_checksum_address(d.account) != member or d.interval not in intervals:
            continue
        if d.deviation_wh > 0:
            out["imbalance_bought_wh"] += d.deviation_wh
            out["paid_imbalance_nano_eur"] += d.paid_nano_eur
        else:
            out["imbalance_sold_wh"] -= d.deviation_wh
            out["received_imbalance_nano_eur"] -= d.paid_nano_eur
    return out


@dataclass(frozen=True)
class IntervalLine:
    """One member in one interval (Wh, consumption / bought positive; money nano-euro)."""

    interval: int
    ordered_buy_wh: int
    ordered_sell_wh: int
    traded_wh: int
    metered_wh: int | None
    deviation_wh: int | None
    deviation_paid_nano_eur: int | None


def interval_lines(member: str, orders: Iterable[Order],
                   settled: Iterable[tuple[int, Sequence[Trade]]],
                   deviations: Iterable[Deviation]) -> list[IntervalLine]:
    """Per interval of ``settled``: what ``member`` ordered (its placed orders), traded (net of
    its trades), the meter measured and the deviation settled (None: not settled yet)."""
    me = to_checksum_address(member)
    ordered: dict[int, list[int]] = {}
    for o in orders:
        if o.prosumer == me:
            pair = ordered.setdefault(o.interval, [0, 0])
            pair[0 if o.side == Side.BUY else 1] += o.energy_wh
    devs = {d.interval: d for d in deviations if to_checksum_address(d.account) == me}
    lines = []
    for interval, trades in settled:
        traded = sum(t.energy_wh for t in trades if to_checksum_address(t.buyer) == me) - sum(
            t.energy_wh for t in trades if to_checksum_address(t.seller) == me)
        d = devs.get(int(interval))
        buy, sell = ordered.get(int(interval), [0, 0])
        lines.append(IntervalLine(int(interval), buy, sell, traded,
                                  None if d is None else d.metered_wh,
                                  None if d is None else d.deviation_wh,
                                  None if d is None else d.paid_nano_eur))
    return lines
