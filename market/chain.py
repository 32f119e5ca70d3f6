"""Settlement glue: orders from the chain -> clearing -> ``GridMarket.settle`` -> replay.

Everything the clearing needs is read from the chain, so anyone can re-run it:

* orders: ``OrderPlaced`` events of the interval (digest, fields; time = block, log index);
* tariffs and interval length: the market contract's state at the settlement block;
* the battery's band: ``GridCapacity.bandOf(batteryDeviceId, interval)``;
* who is still a prosumer (``isProsumer`` at the settlement block): orders of a prosumer removed
  after placing them are left out of the clearing (the contract rejects trades with it);
* the battery's state of charge before the interval: its initial SoC plus the energy
  ``E(batteryPowerW)`` of every ``IntervalSettled`` that came earlier in chain order
  (:func:`market.battery.energy_for_power`, the same rounding the settlement used; clipped to
  the SoC limits if a foreign settler pushed it outside).

The battery's static data (capacity, SoC limits, efficiencies) is off-chain: a JSON file of
:class:`market.battery.BatteryParams` fields, or :func:`default_battery_params` from the
deployment (2 h of the battery's rated power, SoC 10..90 %, start at 50 %, 95 % efficiencies).

Flow of :meth:`MarketChain.settle_interval`: refuse a settled interval; clear the orders seen
as a dry run (a missing band or a band the battery cannot follow raises ``SettlementError`` /
``BatteryInfeasibleError`` here and the interval stays open, nothing booked); commit their
Merkle root (``commitOrders`` closes the interval); re-read the orders up to the commit and
check their root is the committed one (an order that slipped in between could not be settled:
``CommitRaceError``); clear; send ``settle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from web3.contract import Contract

from gridshare.chain.client import Chain
from gridshare.chain.deploy import Deployment
from gridshare.chain.errors import ContractRevert
from gridshare.chain.events import EventReader
from market.battery import BatteryParams, energy_for_power
from market.merkle import merkle_root
from market.orders import MarketDomain, Order, PlacedOrder, Side, chain_seq
from market.settlement import IntervalClearing, MarketParams, Trade, clear_interval

SETTLER_ROLE_NAME = "settler"


class SettlementError(ValueError):
    """An interval that cannot be settled or replayed as asked (message names why)."""


class CommitRaceError(SettlementError):
    """Orders were placed between reading the book and committing its root."""


def default_battery_params(deployment: Deployment) -> BatteryParams:
    """Battery data derived from the deployment's battery device (see module docstring)."""
    if deployment.battery_device_id is None:
        raise SettlementError(f"deployment of {deployment.feeder} has no community battery")
    device = next(d for d in deployment.devices if d["device_id"] == deployment.battery_device_id)
    rated_w = max(abs(int(device["p_min_rated_w"])), abs(int(device["p_max_rated_w"])))
    capacity_wh = 2 * rated_w
    return BatteryParams(
        account=deployment.roles["batteryAccount"],
        capacity_wh=capacity_wh,
        soc_min_wh=capacity_wh // 10,
        soc_max_wh=capacity_wh * 9 // 10,
        initial_soc_wh=capacity_wh // 2,
        charge_efficiency_ppm=950_000,
        discharge_efficiency_ppm=950_000,
    )


@dataclass(frozen=True)
class SettledInterval:
    """An interval as settled on-chain (from its ``IntervalSettled``/``TradeSettled`` events)."""

    interval: int
    orders_root: bytes
    clearing_price_micro_eur_per_kwh: int
    battery_power_w: int
    trades: tuple[Trade, ...]
    block_number: int
    log_index: int
    tx_hash: str

    def settle_args(self) -> tuple[int, bytes, int, int, list[tuple[str, str, int, int]]]:
        """The ``settle()`` arguments this settlement was made with."""
        return (self.interval, self.orders_root, self.clearing_price_micro_eur_per_kwh,
                self.battery_power_w, [t.as_tuple() for t in self.trades])


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
        head = (f"interval {s.interval}: {len(self.recomputed.book)} orders, root "
                f"0x{s.orders_root.hex()}, price {s.clearing_price_micro_eur_per_kwh} "
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

    def settlements(self, to_block: int | None = None) -> list[SettledInterval]:
        """All settlements in chain order, with their trades."""
        settled = self._logs("IntervalSettled", to_block)
        trades: dict[int, list[Trade]] = {}
        for e in self._logs("TradeSettled", to_block):
            a = e["args"]
            trades.setdefault(int(a["interval"]), []).append(Trade.from_tuple(
                (a["buyer"], a["seller"], a["energyWh"], a["priceMicroEurPerKwh"])))
        return [
            SettledInterval(
                interval=int(e["args"]["interval"]),
                orders_root=bytes(e["args"]["ordersRoot"]),
                clearing_price_micro_eur_per_kwh=int(e["args"]["clearingPriceMicroEurPerKwh"]),
                battery_power_w=int(e["args"]["batteryPowerW"]),
                trades=tuple(trades.get(int(e["args"]["interval"]), ())),
                block_number=int(e["blockNumber"]),
                log_index=int(e["logIndex"]),
                tx_hash=e["transactionHash"].to_0x_hex(),
            )
            for e in settled
        ]

    def soc_before(self, settlements: Sequence[SettledInterval], interval_s: int) -> int:
        """Battery SoC (Wh) after replaying ``settlements`` from the initial SoC."""
        b = self.battery
        soc = b.initial_soc_wh
        for s in settlements:
            soc = b.soc_after(soc, energy_for_power(s.battery_power_w, interval_s))
            soc = min(max(soc, b.soc_min_wh), b.soc_max_wh)
        return soc

    def interval_state(self, interval: int) -> dict[str, Any]:
        """``intervalState(interval)`` as a dict."""
        st = self.chain.call(self.market.functions.intervalState(int(interval)))
        keys = ("ordersRoot", "committed", "settled", "clearingPriceMicroEurPerKwh",
                "batteryPowerW", "tradeCount")
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
        """Clear ``interval`` from on-chain data as of ``block`` (no transaction)."""
        params = self.params(block)
        orders = self.placed_orders(interval) if orders is None else orders
        history = self.settlements() if history is None else history
        soc = self.soc_before(history, params.interval_s)
        is_prosumer = self.market.functions.isProsumer
        inactive = {a for a in {p.order.prosumer for p in orders}
                    if not self.chain.call(is_prosumer(a), block=block)}
        return clear_interval(interval, orders, params, self.battery, soc,
                              self.band_w(interval, block), inactive)

    def settle_interval(self, interval: int, sender: str = SETTLER_ROLE_NAME
                        ) -> tuple[IntervalClearing, Any]:
        """Commit, clear and settle ``interval``; returns (clearing, settle receipt)."""
        f = self.market.functions
        state = self.interval_state(interval)
        if state["settled"]:
            raise SettlementError(f"interval {interval} is already settled")
        if not state["committed"]:
            seen = self.placed_orders(interval)
            # Dry run first: a missing band or one the battery cannot follow raises here, before
            # the commitment closes the interval (it then stays open, nothing is booked).
            history = self.settlements()
            self.clear(interval, orders=seen, history=history)
            root = merkle_root(p.digest for p in seen)
            receipt = self.chain.transact(f.commitOrders(int(interval), root), sender)
            commit_block = int(receipt["blockNumber"])
        else:
            root = bytes(state["ordersRoot"])
            commit_block = self.chain.block_number
            history = self.settlements()
        orders = self.placed_orders(interval, commit_block)
        final_root = merkle_root(p.digest for p in orders)
        if final_root != root:
            raise CommitRaceError(
                f"interval {interval}: committed root 0x{root.hex()} but its {len(orders)} "
                f"placed orders have root 0x{final_root.hex()}; orders placed while the root was "
                "being committed cannot be settled"
            )
        result = self.clear(interval, orders=orders, history=history)
        receipt = self.chain.transact(f.settle(*result.settle_args()), sender)
        return result, receipt

    # ---- replay
    def replay(self, interval: int) -> ReplayReport:
        """Re-run the clearing of a settled interval from on-chain data and compare."""
        history = self.settlements()
        index = next((i for i, s in enumerate(history) if s.interval == int(interval)), None)
        if index is None:
            raise SettlementError(f"interval {interval} is not settled on-chain")
        onchain = history[index]
        block = onchain.block_number
        orders = self.placed_orders(interval, block)
        recomputed = self.clear(interval, block=block, orders=orders, history=history[:index])
        differences = compare_settlement(onchain.settle_args(), recomputed.settle_args())
        return ReplayReport(int(interval), not differences, tuple(differences), onchain,
                            recomputed)


def compare_settlement(onchain: tuple[Any, ...], recomputed: tuple[Any, ...]) -> list[str]:
    """Named differences between two ``settle()`` argument tuples (empty when equal)."""
    names = ("interval", "ordersRoot", "clearingPriceMicroEurPerKwh", "batteryPowerW")
    out = [f"{n}: on-chain {a!r}, replay {b!r}"
           for n, a, b in zip(names, onchain[:4], recomputed[:4], strict=True) if a != b]
    a_trades, b_trades = list(onchain[4]), list(recomputed[4])
    if a_trades != b_trades:
        only_a = [t for t in a_trades if t not in b_trades]
        only_b = [t for t in b_trades if t not in a_trades]
        out.append(f"trades: {len(a_trades)} on-chain, {len(b_trades)} replayed; only on-chain "
                   f"{only_a}; only in replay {only_b}")
    return out
