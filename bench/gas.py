"""Gas table of the gridshare contracts on the embedded chain (web3 EthereumTesterProvider, py-evm).

One command: ``python bench/gas.py``. Deploys GridCapacity and GridMarket from the committed
artifacts and measures receipt ``gasUsed`` (whole transaction, 21,000 base included) of
deployment, registration, meter readings, bands, orders, settlements, meter totals and deviation
settlements. Rows with a target (issue 14) print PASS/FAIL; the script exits 1 if any fails.

Each target is measured in a favourable and an unfavourable layout:

* readings, batch 100: ten devices with consecutive ids interleaved / 100 distinct devices with
  scattered ids (one reading each);
* bands, batch 10: devices registered one after another / every other device of 20 with
  scattered ids (metering points in between);
* settlement, 50 trades: members that already hold a balance and trade in several orders each /
  100 members never booked before, one order each.

Every settlement row includes the on-chain order binding (the book hashed against the placed
orders, sides, limits and fills checked per trade); the deviation rows settle the 50-trade
interval of never-booked members against the oracle's meter totals.
Peer: Grid Singularity's decentralised exchange reports ~151k gas per order placed and ~58k per
extra matched trade (their published figures, not measured here); the table prints our ratio.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract

from gridshare.chain.artifacts import load_artifact
from market.orders import EIP712_TYPES

INTERVAL_SECONDS = 900
HEARTBEAT_SECONDS = 3600
MAX_INTERVALS_AHEAD = 96
ADMIN_DELAY_SECONDS = 2 * 86_400
RETAIL = 300_000  # micro-euro per kWh (0.30 EUR/kWh)
FEED_IN = 80_000
IMBALANCE_BUY = 350_000
IMBALANCE_SELL = 60_000
MIN_PRICE = 50_000
MAX_PRICE = 400_000
MAX_ORDER_WH = 1_000_000
CLEARING = 150_000
N_WARM_MEMBERS = 20
N_FRESH_MEMBERS = 100
BATTERY_DEVICE = 1
GRID_REF = 2**32 - 1
BATTERY_REF = 2**32 - 2
GS_GAS_PER_ORDER = 151_000
GS_GAS_PER_TRADE = 58_000
READING_TARGET = 1_500
BAND_TARGET = 25_000
TRADE_TARGET = 30_000

ORDER_TYPES = {"Order": EIP712_TYPES["Order"]}


@dataclass
class Row:
    """One line of the gas table."""

    what: str
    gas: float
    target: int | None = None
    peer: int | None = None

    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "PASS" if self.gas <= self.target else "FAIL"


@dataclass
class Book:
    """An interval's placed orders as ``settle`` names them, and the trades on them."""

    interval: int
    orders: list[tuple[str, int, int, int]]  # (prosumer, side, energyWh, limit)
    trades: list[tuple[int, int, int]]  # (buyOrder, sellOrder, energyWh)
    battery_power_w: int = 0

    def fills(self) -> list[int]:
        """Wh filled per order."""
        out = [0] * len(self.orders)
        for buy, sell, energy in self.trades:
            for ref in (buy, sell):
                if ref < BATTERY_REF:
                    out[ref] += energy
        return out


class Bench:
    """A fresh embedded chain with both contracts deployed."""

    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider())
        self.tester = self.w3.provider.ethereum_tester
        self.dso, self.meter, self.battery, self.oracle, self.settler = self.w3.eth.accounts[:5]
        self.rows: list[Row] = []
        self.members = [self._account(f"gridshare bench member {i}")
                        for i in range(N_WARM_MEMBERS + N_FRESH_MEMBERS)]
        self.cap: Contract
        self.market: Contract

    def _account(self, seed: str) -> Any:
        account = Account.from_key(keccak(text=seed))
        self.tester.add_account(account.key.hex())
        self.w3.eth.send_transaction({"from": self.dso, "to": account.address, "value": 10**18})
        return account

    def gas_of(self, fn: Any, sender: str) -> int:
        receipt = self.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}))
        if receipt.status != 1:
            raise RuntimeError(f"transaction reverted: {fn.fn_name}")
        return int(receipt.gasUsed)

    def deploy(self, name: str, *args: Any) -> tuple[Contract, int]:
        art = load_artifact(name)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        receipt = self.w3.eth.wait_for_transaction_receipt(
            factory.constructor(*args).transact({"from": self.dso})
        )
        return self.w3.eth.contract(address=receipt.contractAddress, abi=art["abi"]), int(
            receipt.gasUsed
        )

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def current_interval(self) -> int:
        return self.now() // INTERVAL_SECONDS

    def run(self) -> list[Row]:
        self._deploy_capacity()
        self._deploy_market()
        self._readings()
        self._bands()
        self._orders()
        self._settlements()
        return self.rows

    # ------------------------------------------------------------------ deployment and registry
    def _deploy_capacity(self) -> None:
        self.cap, gas = self.deploy("GridCapacity", self.dso, ADMIN_DELAY_SECONDS,
                                    INTERVAL_SECONDS, HEARTBEAT_SECONDS, MAX_INTERVALS_AHEAD)
        self.rows.append(Row("deploy GridCapacity", gas))
        gas = self._register_device(BATTERY_DEVICE, 0, -100_000, 100_000)
        self.rows.append(Row("registerDevice (capacity)", gas))
        for dev in range(2, 11):  # ten banded devices registered one after another
            self._register_device(dev, 1, -11_000, 22_000)
        for k in range(20):  # scattered ids: banded devices (even k) between metering points
            self._register_device(self.scattered_id(k), 1 if k % 2 == 0 else 2, -11_000, 22_000)
        for i, _ in enumerate(self.members):
            self._register_device(self.member_device(i), 2, -50_000, 50_000)
        oracle_role = self.cap.functions.ORACLE_ROLE().call()
        self.gas_of(self.cap.functions.grantRole(oracle_role, self.oracle), self.dso)

    def _register_device(self, device_id: int, kind: int, lo_w: int, hi_w: int) -> int:
        return self.gas_of(self.cap.functions.registerDevice(
            device_id, 1, kind, self.dso, self.meter, lo_w, hi_w), self.dso)

    @staticmethod
    def scattered_id(k: int) -> int:
        """Device ids far apart (a DSO numbering by meter serial, say)."""
        return 1_000_003 + 7_919_111 * k

    @staticmethod
    def member_device(i: int) -> int:
        return 100_000 + i

    def _deploy_market(self) -> None:
        self.market, gas = self.deploy(
            "GridMarket", self.dso, ADMIN_DELAY_SECONDS, self.cap.address, BATTERY_DEVICE,
            self.battery, (RETAIL, FEED_IN, IMBALANCE_BUY, IMBALANCE_SELL),
            (MIN_PRICE, MAX_PRICE, MAX_ORDER_WH))
        self.rows.append(Row("deploy GridMarket", gas))
        f = self.market.functions
        gas = self.gas_of(f.registerProsumer(self.members[0].address, self.member_device(0)),
                          self.dso)
        self.rows.append(Row("registerProsumer (market)", gas))
        for i, m in enumerate(self.members[1:], start=1):
            self.gas_of(f.registerProsumer(m.address, self.member_device(i)), self.dso)
        self.gas_of(f.grantRole(f.SETTLER_ROLE().call(), self.settler), self.dso)

    # ------------------------------------------------------------------ readings and bands
    def _readings(self) -> None:
        t0 = self.now()
        layouts = [(1, list(range(2, 11)), None), (10, list(range(2, 11)), None),
                   (100, list(range(2, 11)), READING_TARGET),
                   (100, [self.member_device(i) for i in range(100)], READING_TARGET)]
        for batch, devices, target in layouts:
            records = b"".join(
                struct.pack(">IIiiIi", devices[k % len(devices)], t0 + 60 * k, 3_000 + 17 * k,
                            -400 + 3 * k, 1_000_000 - 150 * k, -2_000 - 7 * k)
                for k in range(batch)
            )
            gas = self.gas_of(self.cap.functions.postReadings(records), self.meter)
            layout = (f"{len(set(devices[:batch]))} devices" if batch > 1 else "")
            what = f"postReadings, per reading, batch {batch}" + (f", {layout}" if layout else "")
            self.rows.append(Row(what, gas / batch, target))

    def _bands(self) -> None:
        interval = self.current_interval() + 1
        layouts = [("batch 1", [BATTERY_DEVICE], None),
                   ("batch 10, consecutive", [BATTERY_DEVICE, *range(2, 11)], BAND_TARGET),
                   ("batch 10, scattered", [self.scattered_id(k) for k in range(0, 20, 2)],
                    BAND_TARGET)]
        for what, devices, target in layouts:
            gas = self.gas_of(self.cap.functions.writeBands(
                interval, bytes([interval % 256]) * 32, devices,
                [-5_000 - d % 7 for d in devices], [8_000 + d % 7 for d in devices]),
                self.oracle)
            self.rows.append(Row(f"writeBands, per device, {what}", gas / len(devices), target))
            interval += 1
        devices = [BATTERY_DEVICE, *range(2, 11)]  # the oracle's call with a battery reserve
        gas = self.gas_of(self.cap.functions.writeBandsWithReserve(
            interval, bytes([interval % 256]) * 32, devices, [-5_000] * 10, [8_000] * 10,
            41_234), self.oracle)
        self.rows.append(Row("writeBandsWithReserve, per device, batch 10, consecutive",
                             gas / len(devices), BAND_TARGET))

    # ------------------------------------------------------------------ orders
    def _sign(self, order: dict[str, int | str], key: bytes) -> bytes:
        domain = {"name": "gridshare-market", "version": "1", "chainId": self.w3.eth.chain_id,
                  "verifyingContract": self.market.address}
        message = encode_typed_data(domain, ORDER_TYPES, order)
        return bytes(Account.sign_message(message, key).signature)

    def _order(self, member: Any, interval: int, side: int, energy_wh: int,
               limit: int) -> dict[str, int | str]:
        return {"prosumer": member.address, "interval": interval, "side": side,
                "energyWh": energy_wh, "priceMicroEurPerKwh": limit,
                "nonce": self.market.functions.nonceOf(member.address).call(),
                "deadline": self.now() + 3_600}

    def place(self, member: Any, interval: int, side: int, energy_wh: int, limit: int) -> int:
        """Relay one signed order; returns its gas."""
        order = self._order(member, interval, side, energy_wh, limit)
        return self.gas_of(self.market.functions.submitOrderSigned(
            order, self._sign(order, member.key)), self.dso)

    def _orders(self) -> None:
        interval = self.current_interval() + MAX_INTERVALS_AHEAD
        member = self.members[0]
        gas = self.place(member, interval, 0, 1_250, 200_000)
        self.rows.append(Row("submitOrderSigned (relayed, first of interval)", gas,
                             peer=GS_GAS_PER_ORDER))
        gas = self.place(member, interval, 0, 1_250, 200_000)
        self.rows.append(Row("submitOrderSigned (relayed)", gas, peer=GS_GAS_PER_ORDER))
        for n in (10, 50):  # the relay's batches: one order of each member, then nonces + 1
            orders = []
            for k in range(n):
                who = self.members[k % len(self.members)]
                order = self._order(who, interval, k % 2, 1_000, 150_000)
                order["nonce"] += k // len(self.members)
                orders.append((order, self._sign(order, who.key)))
            fn = self.market.functions.submitOrdersSigned([o for o, _ in orders],
                                                          [s for _, s in orders])
            placed = fn.call({"from": self.dso})
            if placed != n:  # a rejected order costs less: it would flatter the figure
                raise RuntimeError(f"the batch of {n} would place only {placed}")
            gas = self.gas_of(fn, self.dso)
            self.rows.append(Row(f"submitOrdersSigned, per order, batch {n}", gas / n,
                                 peer=GS_GAS_PER_ORDER))
        order = self._order(member, interval, 1, 700, 90_000)
        gas = self.gas_of(self.market.functions.submitOrder(order), member.address)
        self.rows.append(Row("submitOrder (own tx)", gas, peer=GS_GAS_PER_ORDER))
        gas = self.gas_of(self.market.functions.commitOrders(interval), self.settler)
        self.rows.append(Row("commitOrders (closes the book)", gas))

    # ------------------------------------------------------------------ settlements
    def _book(self, interval: int, buyers: Sequence[Any], sellers: Sequence[Any],
              n_trades: int) -> Book:
        """Place one buy order per buyer (limit = retail) and one sell per seller (limit =
        feed-in), then ``n_trades`` trades: member to member, battery sells, grid sells, grid
        buys, in turn."""
        book = Book(interval, [], [])
        for b, s in zip(buyers, sellers, strict=True):
            for member, side, limit in ((b, 0, RETAIL), (s, 1, FEED_IN)):
                self.place(member, interval, side, 5_000, limit)
                book.orders.append((member.address, side, 5_000, limit))
        battery_sold_wh = 0
        for k in range(n_trades):
            buy, sell = 2 * (k % len(buyers)), 2 * (k % len(sellers)) + 1
            energy = 100 + 7 * k
            kind = k % 5
            if kind == 1:
                sell, battery_sold_wh = BATTERY_REF, battery_sold_wh + energy
            elif kind == 2:
                sell = GRID_REF
            elif kind == 3:
                buy = GRID_REF
            book.trades.append((buy, sell, energy))
        book.battery_power_w = -battery_sold_wh * 3600 // INTERVAL_SECONDS
        return book

    def settle(self, book: Book) -> int:
        self.gas_of(self.cap.functions.writeBands(book.interval, b"\x11" * 32, [BATTERY_DEVICE],
                                                  [-100_000], [100_000]), self.oracle)
        return self.gas_of(self.market.functions.settle(
            book.interval, CLEARING, book.battery_power_w, book.orders, book.trades),
            self.settler)

    def _settlements(self) -> None:
        warm = self.members[:N_WARM_MEMBERS]
        half = N_WARM_MEMBERS // 2
        interval = self.current_interval() + 10  # after the intervals of `_bands`
        first = self._book(interval, warm[:half], warm[half:], N_WARM_MEMBERS)
        gas = self.settle(first)
        self.rows.append(Row(f"settle, per trade, {N_WARM_MEMBERS} trades, first booking",
                             gas / N_WARM_MEMBERS, None, GS_GAS_PER_TRADE))
        for n, target in ((1, None), (10, None), (50, TRADE_TARGET)):
            interval += 1
            gas = self.settle(self._book(interval, warm[:half], warm[half:], n))
            self.rows.append(Row(f"settle, per trade, {n} trades, booked members", gas / n,
                                 target, GS_GAS_PER_TRADE))
        fresh = self.members[N_WARM_MEMBERS:]
        interval += 1
        book = self._book(interval, fresh[:50], fresh[50:], 50)
        gas = self.settle(book)
        self.rows.append(Row("settle, per trade, 50 trades, never-booked members", gas / 50,
                             TRADE_TARGET, GS_GAS_PER_TRADE))
        self._deviations(book, fresh)

    def _deviations(self, book: Book, members: Sequence[Any]) -> None:
        """Meter totals and deviation settlement of ``book``'s interval (after it ended)."""
        self.tester.time_travel((book.interval + 1) * INTERVAL_SECONDS + 1)
        devices = sorted([BATTERY_DEVICE] + [self.member_device(N_WARM_MEMBERS + i)
                                             for i in range(len(members))])
        totals = b"".join(struct.pack(">Iq", d, 4_000 - 97 * (d % 83)) for d in devices)
        gas = self.gas_of(self.cap.functions.writeMeterTotals(book.interval, totals), self.oracle)
        self.rows.append(Row(f"writeMeterTotals, per device, {len(devices)} devices",
                             gas / len(devices)))
        gas = self.gas_of(self.market.functions.settleDeviations(
            book.interval, book.orders, book.fills(), totals), self.dso)
        self.rows.append(Row(f"settleDeviations, per account, {len(devices)} accounts",
                             gas / len(devices)))


def print_table(rows: list[Row]) -> None:
    """Print the table: gas, target, verdict, ratio to the peer figure."""
    print(f"{'operation':60s} {'gas':>12s} {'target':>9s} {'ok':>5s} "
          f"{'vs Grid Singularity':>20s}")
    print("-" * 110)
    for row in rows:
        target = f"{row.target:,}" if row.target else ""
        peer = f"{row.gas / row.peer:.2f}x of {row.peer // 1000}k" if row.peer else ""
        print(f"{row.what:60s} {row.gas:12,.0f} {target:>9s} {row.verdict():>5s} {peer:>20s}")


def main() -> int:
    """Run the benchmark, print the table; exit 1 when a target fails."""
    rows = Bench().run()
    print_table(rows)
    failed = [r.what for r in rows if r.verdict() == "FAIL"]
    if failed:
        print(f"FAILED targets: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
