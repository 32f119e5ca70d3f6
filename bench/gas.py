"""Gas table of the gridshare contracts on the embedded chain (web3 EthereumTesterProvider, py-evm).

One command: ``python bench/gas.py``. Deploys GridCapacity and GridMarket from the committed
artifacts, then measures receipt ``gasUsed`` (whole transaction, 21,000 base included) for
deployment, registration, meter readings per reading at batch 1/10/100, bands per device at batch
1/10, order placement, the order commitment and the settlement per trade at 1/10/50 trades. Rows
with a target from issue 3 print PASS/FAIL; the script exits 1 if any target fails.

Settlements: a first settlement of 20 trades books every member for the first time (fresh balance
slots, reported as "first booking"); the 1/10/50-trade rows then measure the steady state in which
members already hold a balance.
Peer: Grid Singularity's decentralised exchange reports ~151k gas per order placed and ~58k per
extra matched trade (their published figures, not measured here); the table prints our ratio.
"""

from __future__ import annotations

import struct
import sys
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
RETAIL = 300_000  # micro-euro per kWh (0.30 EUR/kWh)
FEED_IN = 80_000
MIN_PRICE = 50_000
MAX_PRICE = 400_000
N_MEMBERS = 20
N_BAND_DEVICES = 10
GS_GAS_PER_ORDER = 151_000
GS_GAS_PER_TRADE = 58_000

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


class Bench:
    """A fresh embedded chain with both contracts deployed."""

    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider())
        self.tester = self.w3.provider.ethereum_tester
        self.dso = self.w3.eth.accounts[0]
        self.rows: list[Row] = []
        self.members = [
            Account.from_key(keccak(text=f"gridshare bench member {i}")) for i in range(N_MEMBERS)
        ]
        for m in self.members:
            self.tester.add_account(m.key.hex())
            self.w3.eth.send_transaction({"from": self.dso, "to": m.address, "value": 10**18})
        self.meter = self.w3.eth.accounts[1]
        self.battery_account = self.w3.eth.accounts[2]
        self.oracle = self.w3.eth.accounts[3]
        self.settler = self.w3.eth.accounts[4]

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

    def run(self) -> list[Row]:
        cap, gas = self.deploy("GridCapacity", self.dso, INTERVAL_SECONDS, HEARTBEAT_SECONDS)
        self.rows.append(Row("deploy GridCapacity", gas))
        # device 0: the community battery; devices 1..: charging stations / other
        gas = self.gas_of(
            cap.functions.registerDevice(
                0, 1, 0, self.battery_account, self.meter, -100_000, 100_000
            ),
            self.dso,
        )
        self.rows.append(Row("registerDevice (capacity)", gas))
        for dev in range(1, N_BAND_DEVICES):
            self.gas_of(
                cap.functions.registerDevice(
                    dev, dev + 1, 1, self.members[dev].address, self.meter, -11_000, 22_000
                ),
                self.dso,
            )
        oracle_role = cap.functions.ORACLE_ROLE().call()
        self.gas_of(cap.functions.grantRole(oracle_role, self.oracle), self.dso)

        market, gas = self.deploy(
            "GridMarket",
            self.dso,
            cap.address,
            0,
            self.battery_account,
            RETAIL,
            FEED_IN,
            MIN_PRICE,
            MAX_PRICE,
        )
        self.rows.append(Row("deploy GridMarket", gas))
        gas = self.gas_of(market.functions.registerProsumer(self.members[0].address), self.dso)
        self.rows.append(Row("registerProsumer (market)", gas))
        for m in self.members[1:]:
            self.gas_of(market.functions.registerProsumer(m.address), self.dso)
        self.gas_of(
            market.functions.grantRole(market.functions.SETTLER_ROLE().call(), self.settler),
            self.dso,
        )

        self._readings(cap)
        interval = self.now() // INTERVAL_SECONDS + 1
        interval = self._bands(cap, interval)
        interval = self._orders(market, interval)
        self._settlements(cap, market, interval)
        return self.rows

    def _readings(self, cap: Contract) -> None:
        t0 = self.now()
        for batch, target in ((1, None), (10, None), (100, 1_500)):
            records = b"".join(
                struct.pack(
                    ">IIiiIi",
                    k % N_BAND_DEVICES,
                    t0 + 60 * k,
                    3_000 + 17 * k,
                    -400 + 3 * k,
                    1_000_000 - 150 * k,
                    -2_000 - 7 * k,
                )
                for k in range(batch)
            )
            gas = self.gas_of(cap.functions.postReadings(records), self.meter)
            self.rows.append(Row(f"postReadings, per reading, batch {batch}", gas / batch, target))

    def _bands(self, cap: Contract, interval: int) -> int:
        for batch, target in ((1, None), (10, 25_000)):
            devices = list(range(batch))
            gas = self.gas_of(
                cap.functions.writeBands(
                    interval,
                    bytes([interval % 256]) * 32,
                    devices,
                    [-5_000 - d for d in devices],
                    [8_000 + d for d in devices],
                ),
                self.oracle,
            )
            self.rows.append(Row(f"writeBands, per device, batch {batch}", gas / batch, target))
            interval += 1
        return interval

    def _sign(self, market: Contract, order: dict[str, int | str], key: bytes) -> bytes:
        domain = {
            "name": "gridshare-market",
            "version": "1",
            "chainId": self.w3.eth.chain_id,
            "verifyingContract": market.address,
        }
        message = encode_typed_data(domain, ORDER_TYPES, order)
        return bytes(Account.sign_message(message, key).signature)

    def _order(self, market: Contract, member: Any, interval: int) -> dict[str, int | str]:
        return {
            "prosumer": member.address,
            "interval": interval,
            "side": 0,
            "energyWh": 1_250,
            "priceMicroEurPerKwh": 200_000,
            "nonce": market.functions.nonceOf(member.address).call(),
            "deadline": self.now() + 3_600,
        }

    def _orders(self, market: Contract, interval: int) -> int:
        member = self.members[0]
        order = self._order(market, member, interval)
        signature = self._sign(market, order, member.key)
        gas = self.gas_of(market.functions.submitOrderSigned(order, signature), self.dso)
        self.rows.append(Row("submitOrderSigned (relayed)", gas, peer=GS_GAS_PER_ORDER))
        order = self._order(market, member, interval)
        gas = self.gas_of(market.functions.submitOrder(order), member.address)
        self.rows.append(Row("submitOrder (own tx)", gas, peer=GS_GAS_PER_ORDER))
        gas = self.gas_of(market.functions.commitOrders(interval, b"\x5a" * 32), self.settler)
        self.rows.append(Row("commitOrders (Merkle root)", gas))
        return interval + 1

    def _trades(self, n: int, interval: int) -> tuple[list[tuple[str, str, int, int]], int, int]:
        """n trades: member<->member at the clearing price, some battery and grid trades."""
        clearing = 150_000
        battery = self.battery_account
        trades = []
        battery_sold_wh = 0
        for k in range(n):
            buyer = self.members[(3 * k + interval) % N_MEMBERS].address
            seller = self.members[(3 * k + interval + 1) % N_MEMBERS].address
            energy = 100 + 37 * k
            if k % 5 == 1:  # battery sells
                seller = battery
                battery_sold_wh += energy
                trades.append((buyer, seller, energy, clearing))
            elif k % 5 == 2:  # grid sells at retail
                trades.append((buyer, "0x" + "00" * 20, energy, RETAIL))
            elif k % 5 == 3:  # grid buys at feed-in
                trades.append(("0x" + "00" * 20, seller, energy, FEED_IN))
            else:
                trades.append((buyer, seller, energy, clearing))
        # battery power (W, charging positive) with -P * s / 3600 == net sold Wh exactly
        battery_power_w = -battery_sold_wh * 3600 // INTERVAL_SECONDS
        return trades, clearing, battery_power_w

    def _settlements(self, cap: Contract, market: Contract, interval: int) -> None:
        warm = [
            (m.address, self.members[(i + 1) % N_MEMBERS].address, 10, 150_000)
            for i, m in enumerate(self.members)
        ]
        cases = [(N_MEMBERS, None, True), (1, None, False), (10, None, False), (50, 30_000, False)]
        for n, target, warm_up in cases:
            trades, clearing, power_w = (warm, 150_000, 0) if warm_up else self._trades(n, interval)
            self.gas_of(
                cap.functions.writeBands(interval, b"\x11" * 32, [0], [-100_000], [100_000]),
                self.oracle,
            )
            gas = self.gas_of(
                market.functions.settle(interval, b"\x22" * 32, clearing, power_w, trades),
                self.settler,
            )
            what = f"settle, per trade, {n} trades"
            if warm_up:
                what += ", first booking"  # every member's balance slot is written fresh
            self.rows.append(Row(what, gas / n, target, GS_GAS_PER_TRADE))
            interval += 1


def print_table(rows: list[Row]) -> None:
    """Print the table: gas, target, verdict, ratio to the peer figure."""
    print(f"{'operation':42s} {'gas':>12s} {'target':>9s} {'ok':>5s} {'vs Grid Singularity':>20s}")
    print("-" * 92)
    for row in rows:
        target = f"{row.target:,}" if row.target else ""
        peer = f"{row.gas / row.peer:.2f}x of {row.peer // 1000}k" if row.peer else ""
        print(f"{row.what:42s} {row.gas:12,.0f} {target:>9s} {row.verdict():>5s} {peer:>20s}")


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
