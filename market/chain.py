"""Settlement glue: orders from the chain -> clearing -> ``GridMarket.settle`` -> replay.

Everything the clearing needs is read from the chain, so anyone can re-run it:

* orders: ``OrderPlaced`` events of the interval (digest, fields; time = block, log index);
* tariffs and interval length: the market contract's state at the settlement block;
* the battery's band: ``GridCapacity.bandOf(batteryDeviceId, interval)``;
* who is still a prosumer (``isProsumer`` at the settlement block): orders of a prosumer removed
  after placing them are left out of the clearing (the contract rejects trades with it);
* the battery's state of charge (Wh) before interval N (:meth:`MarketChain.soc_before`): its
  initial SoC run through the battery's energy (AC Wh, charging positive) of every earlier
  interval, in interval order (``BatteryStorage.replay_energies_soc_wh``: ``soc_after``, then
  clamped to [soc_min, soc_max] after each interval). An interval's energy is what the battery's
  meter measured, its device's entry in the oracle's meter totals (``MeterTotalsWritten`` of the
  capacity contract) when they are written; otherwise, for a settled interval, the traded
  ``E(batteryPowerW)`` of its ``IntervalSettled`` (:func:`capacity.storage.energy_for_power`,
  the same rounding the settlement used). So an interval metered but not settled counts, and
  the battery's deviations from its traded power do not make the SoC drift from the metered
  one. The settlements counted are those earlier in chain order, the totals those written up to
  the block the clearing reads (a replay: the settlement's block), so a replay reads what the
  settlement read.

The battery's static data (capacity, SoC limits, efficiencies) is off-chain: a JSON file of
:class:`market.battery.BatteryParams` fields, or :func:`default_battery_params` from the
deployment (2 h of the battery's rated power, SoC 10..90 %, start at 50 %, 95 % efficiencies).

Flow of :meth:`MarketChain.settle_interval`: refuse a settled interval; clear the orders seen
as a dry run (a missing band or a band the battery cannot follow raises ``SettlementError`` /
``BatteryInfeasibleError`` here and the interval stays open, nothing booked); close it
(``commitOrders``); re-read the orders up to the commit and check that they hash to the
contract's ``bookHash`` (``CommitRaceError`` otherwise: the reader missed an order); clear; send
``settle`` with the whole book and the order-level trades.

Deviations (:mod:`market.deviations`): once the oracle has written an interval's meter totals,
:meth:`MarketChain.settle_deviations` sends ``settleDeviations`` with the settlement's book and
fills and the oracle's totals; :meth:`MarketChain.replay_deviations` recomputes the totals from
the readings on-chain (:mod:`gridshare.chain.metering`) and the deviations from the settlement
and compares both with what the chain holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils import keccak
from web3.contract import Contract

from capacity.storage import default_storage, energy_for_power
from gridshare.chain.client import Chain
from gridshare.chain.deploy import Deployment
from gridshare.chain.errors import ContractRevert
from gridshare.chain.events import EventReader
from gridshare.chain.metering import MeteringReader, decode_totals
from market.battery import BatteryParams
from market.deviations import Deviation, expected_deviations, traded_per_account
from market.orders import MarketDomain, Order, PlacedOrder, Side, book_entry, book_hash, chain_seq
from market.settlement import (
    BATTERY_ORDER_REF,
    IntervalClearing,
    MarketParams,
    OrderTradeArgs,
    Trade,
    clear_interval,
)

SETTLER_ROLE_NAME = "settler"


class SettlementError(ValueError):
    """An interval that cannot be settled or replayed as asked (message names why)."""


class CommitRaceError(SettlementError):
    """The orders read do not hash to the contract's book of the interval."""


def default_battery_params(deployment: Deployment) -> BatteryParams:
    """Battery data derived from the deployment's battery device (``capacity.storage.
    default_storage`` of its rated power)."""
    if deployment.battery_device_id is None:
        raise SettlementError(f"deployment of {deployment.feeder} has no community battery")
    device = next(d for d in deployment.devices if d["device_id"] == deployment.battery_device_id)
    storage = default_storage(max(abs(int(device["p_min_rated_w"])),
                                  abs(int(device["p_max_rated_w"]))))
    return BatteryParams(
        account=deployment.roles["batteryAccount"],
        capacity_wh=storage.capacity_wh,
        soc_min_wh=storage.soc_min_wh,
        soc_max_wh=storage.soc_max_wh,
        initial_soc_wh=storage.initial_soc_wh,
        charge_efficiency_ppm=storage.charge_efficiency_ppm,
        discharge_efficiency_ppm=storage.discharge_efficiency_ppm,
    )


def fills_hash(fills: Sequence[int]) -> bytes:
    """The contract's ``fillsHash``: keccak256 of the fills as 32-byte big-endian words."""
    return keccak(b"".join(int(f).to_bytes(32, "big") for f in fills))


@dataclass(frozen=True)
class SettledInterval:
    """An interval as settled on-chain (from its ``IntervalSettled``/``TradeSettled`` events).

    ``trades`` per party (for statements), ``order_trades`` as the contract took them.
    """

    interval: int
    book_hash: bytes
    fills_hash: bytes
    clearing_price_micro_eur_per_kwh: int
    battery_power_w: int
    trades: tuple[Trade, ...]
    order_trades: tuple[OrderTradeArgs, ...]
    block_number: int
    log_index: int
    tx_hash: str

    def fills_wh(self, n_orders: int) -> list[int]:
        """Wh filled per book order (``n_orders`` placed)."""
        fills = [0] * n_orders
        for buy, sell, energy in self.order_trades:
            for ref in (buy, sell):
                if ref < BATTERY_ORDER_REF:
                    fills[ref] += energy
        return fills

    def battery_bought_wh(self) -> int:
        """The battery's bought minus sold energy, Wh."""
        return sum(e for b, _, e in self.order_trades if b == BATTERY_ORDER_REF) - sum(
            e for _, s, e in self.order_trades if s == BATTERY_ORDER_REF)


@dataclass(frozen=True)
class ReplayReport:
    """Outcome of :meth:`MarketChain.replay`."""

    interval: int
    equal: bool
    differences: tuple[str, ...]
    onchain: SettledInterval
    recomputed: IntervalClearing = field(repr=False)

    def format_text(self) -> str:
        """Human-readable summary."""
        s = self.onchain
        head = (f"interval {s.interval}: {len(self.recomputed.placed)} orders, book "
                f"0x{s.book_hash.hex()}, price {s.clearing_price_micro_eur_per_kwh} "
                f"micro-EUR/kWh, battery {s.battery_power_w} W, {len(s.trades)} trades "
                f"(tx {s.tx_hash}, block {s.block_number})")
        if self.equal:
            return head + "\nreplay: EQUAL (re-run clearing gives the settled result)"
        return head + "\nreplay: DIFFERENT\n" + "\n".join(f"  {d}" for d in self.differences)


class MarketChain:
    """The market contract of one deployment, with the reads and writes of settlement."""

    def __init__(self, chain: Chain, deployment: Deployment,
                 battery: BatteryParams | None = None) -> None:
        self.chain = chain
        self.deployment = deployment
        self.market: Contract = deployment.market(chain)
        self.capacity: Contract = deployment.capacity(chain)
        self.battery = battery or default_battery_params(deployment)
        onchain_battery = chain.call(self.market.functions.batteryAccount())
        if onchain_battery != self.battery.account:
            raise SettlementError(
                f"battery account {self.battery.account} differs from the market's "
                f"{onchain_battery}"
            )
        self.battery_device_id = int(chain.call(self.market.functions.batteryDeviceId()))
        self.domain = MarketDomain(chain.chain_id, self.market.address)
        self.reader = EventReader(chain, self.market, deployment.deploy_block)
        self.metering = MeteringReader(chain, self.capacity, deployment.deploy_block,
                                       deployment.interval_s)
        # (block, memberOfDevice by device, isProsumer by account, imbalance tariffs)
        self._registry_cache: tuple[int, dict[int, str], dict[str, bool],
                                    tuple[int, int] | None] = (-1, {}, {}, None)

    # ---- reads
    def params(self, block: int | str = "latest") -> MarketParams:
        """Tariffs and interval length from the market contract (at ``block``)."""
        f = self.market.functions
        return MarketParams(
            interval_s=int(self.chain.call(f.intervalSeconds(), block=block)),
            retail_price_micro_eur_per_kwh=int(
                self.chain.call(f.retailTariffMicroEurPerKwh(), block=block)),
            feed_in_price_micro_eur_per_kwh=int(
                self.chain.call(f.feedInTariffMicroEurPerKwh(), block=block)),
        )

    def _logs(self, event: str, to_block: int | None = None,
              filters: dict[str, Any] | None = None) -> list[Any]:
        """``event`` logs of the market up to ``to_block`` in chain order, filtered by args.

        Read through the market's ``EventReader``: repeated reads cost only the new blocks, and
        after a reorg the logs are those of the new branch.
        """
        wanted = dict(filters or {})
        return [e for e in self.reader.logs(event, to_block)
                if all(e["args"][k] == v for k, v in wanted.items())]

    def placed_orders(self, interval: int, to_block: int | None = None) -> list[PlacedOrder]:
        """The interval's orders from ``OrderPlaced`` events, in placement order.

        The event carries no deadline: ``Order.deadline_unix_s`` is 0 here and ``digest`` is
        the contract's (it is what the commitment and the tie-break use).
        """
        out = []
        for e in self._logs("OrderPlaced", to_block, {"interval": int(interval)}):
            a = e["args"]
            order = Order(a["prosumer"], int(a["interval"]), Side(int(a["side"])),
                          int(a["energyWh"]), int(a["priceMicroEurPerKwh"]), int(a["nonce"]), 0)
            out.append(PlacedOrder(order, bytes(a["digest"]),
                                   chain_seq(e["blockNumber"], e["logIndex"])))
        return out

    def band_w(self, interval: int, block: int | str = "latest") -> tuple[int, int]:
        """The battery's band (P_min, P_max) in W for ``interval``."""
        try:
            p_min, p_max, _ = self.chain.call(
                self.capacity.functions.bandOf(self.battery_device_id, int(interval)), block=block)
        except ContractRevert as exc:
            raise SettlementError(
                f"no band of the battery (device {self.battery_device_id}) for interval "
                f"{interval}: {exc}"
            ) from exc
        return int(p_min), int(p_max)

    def reserve_wh(self, interval: int, block: int | str = "latest") -> int | None:
        """The battery reserve (Wh) the oracle wrote with ``interval``'s bands as of ``block``
        (``GridCapacity.reserveOf``; None: none written)."""
        written, reserve = self.chain.call(self.capacity.functions.reserveOf(int(interval)),
                                           block=block)
        return int(reserve) if written else None

    def settlements(self, to_block: int | None = None) -> list[SettledInterval]:
        """All settlements in chain order, with their trades."""
        trades: dict[int, list[Trade]] = {}
        order_trades: dict[int, list[OrderTradeArgs]] = {}
        for e in self._logs("TradeSettled", to_block):
            a = e["args"]
            interval = int(a["interval"])
            trades.setdefault(interval, []).append(Trade.from_tuple(
                (a["buyer"], a["seller"], a["energyWh"], a["priceMicroEurPerKwh"])))
            order_trades.setdefault(interval, []).append(
                (int(a["buyOrder"]), int(a["sellOrder"]), int(a["energyWh"])))
        return [self._settled(e, trades, order_trades)
                for e in self._logs("IntervalSettled", to_block)]

    @staticmethod
    def _settled(e: Any, trades: dict[int, list[Trade]],
                 order_trades: dict[int, list[OrderTradeArgs]]) -> SettledInterval:
        a = e["args"]
        interval = int(a["interval"])
        return SettledInterval(
            interval=interval,
            book_hash=bytes(a["bookHash"]),
            fills_hash=bytes(a["fillsHash"]),
            clearing_price_micro_eur_per_kwh=int(a["clearingPriceMicroEurPerKwh"]),
            battery_power_w=int(a["batteryPowerW"]),
            trades=tuple(trades.get(interval, ())),
            order_trades=tuple(order_trades.get(interval, ())),
            block_number=int(e["blockNumber"]),
            log_index=int(e["logIndex"]),
            tx_hash=e["transactionHash"].to_0x_hex(),
        )

    def written_totals(self, to_block: int | None = None) -> dict[int, dict[int, int]]:
        """The oracle's meter totals ({device id: Wh, consumption positive}) by interval, of
        every interval whose totals were written up to ``to_block`` (default: the head): one
        read of the ``MeterTotalsWritten`` stream (``MeteringReader.written`` reads it once per
        interval); the first write of an interval counts (the contract takes one)."""
        blobs: dict[int, bytes] = {}
        for e in self.metering.reader.logs("MeterTotalsWritten", to_block):
            blobs.setdefault(int(e["args"]["interval"]), bytes(e["args"]["totals"]))
        return {i: decode_totals(b) for i, b in blobs.items()}

    def battery_energies_wh(self, settlements: Sequence[SettledInterval], interval_s: int, *,
                            to_block: int | None = None, before_interval: int | None = None
                            ) -> dict[int, int]:
        """The battery's energy (AC Wh, charging positive) by interval, in interval order: its
        meter's total where the oracle's totals written up to ``to_block`` (default: the head)
        have the battery's device, else the traded ``E(battery_power_w)`` of its settlement in
        ``settlements``; intervals with neither are left out. Only intervals before
        ``before_interval`` when it is given."""
        energies = {s.interval: energy_for_power(s.battery_power_w, interval_s)
                    for s in settlements}
        for interval, totals in self.written_totals(to_block).items():
            if self.battery_device_id in totals:
                energies[interval] = totals[self.battery_device_id]
        return {i: energies[i] for i in sorted(energies)
                if before_interval is None or i < before_interval}

    def soc_before(self, settlements: Sequence[SettledInterval], interval_s: int, *,
                   to_block: int | None = None, before_interval: int | None = None) -> int:
        """Battery SoC (Wh) from the initial SoC after the energies of
        :meth:`battery_energies_wh` (metered where the totals are written up to ``to_block``,
        else traded in ``settlements``; before ``before_interval`` if given), in interval order,
        clamped to [soc_min, soc_max] after each interval (module docstring)."""
        energies = self.battery_energies_wh(settlements, interval_s, to_block=to_block,
                                            before_interval=before_interval)
        return self.battery.storage.replay_energies_soc_wh(energies.values())

    def interval_state(self, interval: int) -> dict[str, Any]:
        """``intervalState(interval)`` as a dict."""
        st = self.chain.call(self.market.functions.intervalState(int(interval)))
        keys = ("bookHash", "fillsHash", "committed", "settled", "deviationsSettled",
                "clearingPriceMicroEurPerKwh", "batteryPowerW", "batteryBoughtWh", "tradeCount")
        return dict(zip(keys, st, strict=True))

    def shares_bps(self) -> dict[str, int]:
        """Battery shares in basis points from the ``BatteryShareSet`` events (latest wins)."""
        shares: dict[str, int] = {}
        for e in self._logs("BatteryShareSet"):
            shares[e["args"]["member"]] = int(e["args"]["shareBps"])
        return {k: v for k, v in shares.items() if v}

    # ---- writes
    def clear(self, interval: int, block: int | str = "latest",
              orders: Sequence[PlacedOrder] | None = None,
              history: Sequence[SettledInterval] | None = None) -> IntervalClearing:
        """Clear ``interval`` from on-chain data as of ``block`` (no transaction); the
        battery's SoC from ``history`` (default: every settlement) and the meter totals written
        up to ``block``, of the intervals before ``interval`` (:meth:`soc_before`)."""
        params = self.params(block)
        orders = self.placed_orders(interval) if orders is None else orders
        history = self.settlements() if history is None else history
        soc = self.soc_before(history, params.interval_s,
                              to_block=block if isinstance(block, int) else None,
                              before_interval=int(interval))
        is_prosumer = self.market.functions.isProsumer
        inactive = {a for a in {p.order.prosumer for p in orders}
                    if not self.chain.call(is_prosumer(a), block=block)}
        return clear_interval(interval, orders, params, self.battery, soc,
                              self.band_w(interval, block), inactive,
                              self.reserve_wh(interval, block))

    def settle_interval(self, interval: int, sender: str = SETTLER_ROLE_NAME
                        ) -> tuple[IntervalClearing, Any]:
        """Close, clear and settle ``interval``; returns (clearing, settle receipt)."""
        f = self.market.functions
        state = self.interval_state(interval)
        if state["settled"] or state["deviationsSettled"]:
            raise SettlementError(f"interval {interval} is already settled")
        history = self.settlements()
        if not state["committed"]:
            # Dry run first: a missing band or one the battery cannot follow raises here, before
            # the commitment closes the interval (it then stays open, nothing is booked).
            self.clear(interval, orders=self.placed_orders(interval), history=history)
            receipt = self.chain.transact(f.commitOrders(int(interval)), sender)
            commit_block = int(receipt["blockNumber"])
        else:
            commit_block = self.chain.block_number
        orders = self.placed_orders(interval, commit_block)
        onchain = bytes(self.interval_state(interval)["bookHash"])
        read = book_hash(book_entry(p.order) for p in orders)
        if read != onchain:
            raise CommitRaceError(
                f"interval {interval}: the contract's book hash is 0x{onchain.hex()} but the "
                f"{len(orders)} orders read hash to 0x{read.hex()}"
            )
        result = self.clear(interval, orders=orders, history=history)
        receipt = self.chain.transact(f.settle(*result.settle_args()), sender)
        return result, receipt

    # ---- replay
    def replay(self, interval: int) -> ReplayReport:
        """Re-run the clearing of a settled interval from on-chain data as of its settlement's
        block and compare (the SoC: the settlements before it in chain order and the meter
        totals written up to that block, so totals written later do not change it)."""
        history = self.settlements()
        index = next((i for i, s in enumerate(history) if s.interval == int(interval)), None)
        if index is None:
            raise SettlementError(f"interval {interval} is not settled on-chain")
        onchain = history[index]
        block = onchain.block_number
        orders = self.placed_orders(interval, block)
        recomputed = self.clear(interval, block=block, orders=orders, history=history[:index])
        differences = compare_settlement(onchain, recomputed)
        return ReplayReport(int(interval), not differences, tuple(differences), onchain,
                            recomputed)

    # ---- deviations
    def settled(self, interval: int) -> SettledInterval | None:
        """The settlement of ``interval`` (None: its trades were not settled)."""
        return next((s for s in self.settlements() if s.interval == int(interval)), None)

    def book_and_fills(self, interval: int) -> tuple[list[Any], list[int], int]:
        """The settlement's book, its fills (Wh per order) and the battery's bought Wh; empty
        when the interval's trades were not settled."""
        s = self.settled(interval)
        if s is None:
            return [], [], 0
        book = [book_entry(p.order) for p in self.placed_orders(interval, s.block_number)]
        return book, s.fills_wh(len(book)), s.battery_bought_wh()

    def settle_deviations(self, interval: int, sender: str = SETTLER_ROLE_NAME) -> Any:
        """Send ``settleDeviations`` for ``interval`` with the oracle's totals; returns the
        receipt. Raises SettlementError when the totals are not written or it is done."""
        totals = self.metering.written(interval)
        if totals is None:
            raise SettlementError(f"interval {interval}: the oracle has not written its meter "
                                  "totals")
        if self.interval_state(interval)["deviationsSettled"]:
            raise SettlementError(f"interval {interval}: deviations are already settled")
        book, fills, _ = self.book_and_fills(interval)
        return self.chain.transact(
            self.market.functions.settleDeviations(int(interval), book, fills, totals), sender)

    def deviations(self, interval: int | None = None) -> list[Deviation]:
        """Settled deviations (``DeviationSettled`` events), of one interval or all."""
        return [
            Deviation(int(a["interval"]), a["account"], int(a["deviceId"]), int(a["tradedWh"]),
                      int(a["meteredWh"]), int(a["priceMicroEurPerKwh"]))
            for a in (e["args"] for e in self._logs("DeviationSettled"))
            if interval is None or int(a["interval"]) == int(interval)
        ]

    def registry(self, devices: Sequence[int], to_block: int | None = None
                 ) -> tuple[dict[int, str], set[str], tuple[int, int]]:
        """As of ``to_block`` (default: the head), read from the contract: the account of each
        of ``devices`` that has one (``memberOfDevice``; the battery's included), the former
        members among them and the imbalance (buy, sell) tariffs in micro-euro per kWh. Reads are
        cached per block: replaying interval after interval reads each device once."""
        block = self.chain.block_number if to_block is None else int(to_block)
        if self._registry_cache[0] != block:
            self._registry_cache = (block, {}, {}, None)
        _, member_of, prosumer, imbalance = self._registry_cache
        f = self.market.functions
        for d in devices:
            if d not in member_of:
                member_of[d] = self.chain.call(f.memberOfDevice(int(d)), block=block)
        members = {d: member_of[d] for d in devices if int(member_of[d], 16) != 0}
        for a in members.values():
            if a not in prosumer:
                prosumer[a] = bool(self.chain.call(f.isProsumer(a), block=block))
        if imbalance is None:
            t = self.chain.call(f.tariffs(), block=block)
            imbalance = (int(t[2]), int(t[3]))
            self._registry_cache = (block, member_of, prosumer, imbalance)
        former = {a for a in members.values() if a != self.battery.account and not prosumer[a]}
        return members, former, imbalance

    def expected_deviations(self, interval: int, totals: dict[int, int],
                            to_block: int | None = None) -> list[Deviation]:
        """The deviations the contract books for ``totals`` given the chain as of ``to_block``."""
        book, fills, battery_bought = self.book_and_fills(interval)
        traded = traded_per_account(book, fills, self.battery.account, battery_bought)
        members, former, (buy, sell) = self.registry(sorted(totals), to_block)
        return expected_deviations(interval, totals, traded, members, former, buy, sell)

    def deviations_settled_block(self, interval: int) -> int | None:
        """The block of the interval's ``DeviationsSettled`` event (None: not settled)."""
        logs = self._logs("DeviationsSettled", None, {"interval": int(interval)})
        return int(logs[-1]["blockNumber"]) if logs else None

    def _registry_block(self, interval: int) -> int | None:
        """The block to read the registry and tariffs at for replaying ``interval``'s
        deviations: the block of their settlement when a registration, removal or tariff
        change (the only writes of what the deviations read) came after it, else None (the
        head: the same state, and one cached read per device for a whole day's replay)."""
        block = self.deviations_settled_block(interval)
        if block is None:
            return None
        later = any(int(e["blockNumber"]) > block
                    for event in ("ProsumerRegistered", "ProsumerRemoved", "TariffsSet")
                    for e in self._logs(event))
        return block if later else None

    def replayable_intervals(self) -> list[int]:
        """Every interval whose trades or deviations were settled, ascending."""
        return sorted({int(e["args"]["interval"]) for event in ("IntervalSettled",
                                                                 "DeviationsSettled")
                       for e in self._logs(event)})

    def replay_deviations(self, interval: int) -> list[str]:
        """Differences between the chain's meter totals and deviations of ``interval`` and
        their recomputation from the readings and the settlement (empty: equal). The registry
        and imbalance tariffs are read as of the block of the deviations' settlement, so a
        later tariff change or member removal does not change the replay."""
        written = self.metering.written(interval)
        if written is None:
            return [f"interval {interval}: no meter totals written"]
        out = []
        recomputed = self.metering.totals(interval)
        if decode_totals(written) != recomputed:
            out.append(f"meter totals: written {decode_totals(written)}, from the readings "
                       f"{recomputed}")
        settled = self.deviations(interval)
        expected = self.expected_deviations(interval, decode_totals(written),
                                            self._registry_block(interval))
        if sorted(settled) != sorted(expected):
            out.append(f"deviations: {len(settled)} settled, {len(expected)} recomputed; only "
                       f"settled {sorted(set(settled) - set(expected))}; only recomputed "
                       f"{sorted(set(expected) - set(settled))}")
        return out


def compare_settlement(onchain: SettledInterval, recomputed: IntervalClearing) -> list[str]:
    """Named differences between a settlement on-chain and its recomputation (empty: equal)."""
    mine = recomputed.settle_args()
    pairs = (("interval", onchain.interval, mine[0]),
             ("bookHash", "0x" + onchain.book_hash.hex(), "0x" + recomputed.book_hash.hex()),
             ("clearingPriceMicroEurPerKwh", onchain.clearing_price_micro_eur_per_kwh, mine[1]),
             ("batteryPowerW", onchain.battery_power_w, mine[2]),
             ("fillsHash", "0x" + onchain.fills_hash.hex(),
              "0x" + fills_hash(recomputed.fills_wh()).hex()))
    out = [f"{n}: on-chain {a!r}, replay {b!r}" for n, a, b in pairs if a != b]
    a_trades, b_trades = list(onchain.order_trades), list(mine[4])
    if a_trades != b_trades:
        only_a = [t for t in a_trades if t not in b_trades]
        only_b = [t for t in b_trades if t not in a_trades]
        out.append(f"trades: {len(a_trades)} on-chain, {len(b_trades)} replayed; only on-chain "
                   f"{only_a}; only in replay {only_b}")
    return out
