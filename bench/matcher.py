"""Market matcher benchmark: clearing time per order-book size.

    python bench/matcher.py [--repeat 5]

Clearing: random books of 100, 1,000 and 10,000 orders (half buys, half sells, prices in the
market's bounds). Columns: ``clear_book`` (the vectorised auction on a built book), the whole
``clear_interval`` (book building, auction, battery, grid, book hash), and the named peer: the
plain-loop merit-order walk of the same rules (``tests/market/test_clearing.py``'s reference),
measured in the same run; ``ratio`` = peer / clear_book. Target: 10,000 orders in <= 50 ms.
Settlement gas (trades bound to the orders, both layouts) is ``bench/gas.py``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

# This file is called market.py: drop its folder from the path so ``market`` is the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from eth_utils import keccak  # noqa: E402

from market.battery import BatteryParams  # noqa: E402
from market.clearing import OrderBook, clear_book  # noqa: E402
from market.orders import Order, PlacedOrder, Side  # noqa: E402
from market.settlement import MarketParams, clear_interval  # noqa: E402

RETAIL, FEED_IN = 300_000, 80_000
PARAMS = MarketParams(900, RETAIL, FEED_IN)
BATTERY = BatteryParams("0x" + "ba" * 20, 200_000, 20_000, 180_000, 100_000)


def random_book(n: int, seed: int = 0) -> list[PlacedOrder]:
    """``n`` orders of 100 prosumers; digests are random 32-byte values (no signing cost)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        side = Side.BUY if i % 2 == 0 else Side.SELL
        order = Order("0x" + f"{i % 100 + 1:040x}", 1, side, rng.randint(100, 5000),
                      rng.randint(FEED_IN, RETAIL), i, 2**40)
        out.append(PlacedOrder(order, keccak(i.to_bytes(8, "big") + bytes([seed % 256])), i))
    return out


def plain_loop(orders: list[PlacedOrder]) -> tuple[int, int]:
    """Peer: the same auction as a Python loop over sorted orders; returns (matched Wh, p*)."""
    buys = sorted((p for p in orders if p.order.side == Side.BUY),
                  key=lambda p: (-p.order.price_micro_eur_per_kwh, p.placed_seq, p.digest))
    sells = sorted((p for p in orders if p.order.side == Side.SELL),
                   key=lambda p: (p.order.price_micro_eur_per_kwh, p.placed_seq, p.digest))
    left_b = [p.order.energy_wh for p in buys]
    left_s = [p.order.energy_wh for p in sells]
    i = j = matched = 0
    last = (0, 0)
    while i < len(buys) and j < len(sells):
        b, s = buys[i].order.price_micro_eur_per_kwh, sells[j].order.price_micro_eur_per_kwh
        if b < s:
            break
        q = min(left_b[i], left_s[j])
        left_b[i] -= q
        left_s[j] -= q
        matched += q
        last = (b, s)
        i += left_b[i] == 0
        j += left_s[j] == 0
    return matched, (last[0] + last[1]) // 2


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def bench_clearing(repeat: int) -> None:
    print("clearing (best of", repeat, "runs, ms)")
    print(f"{'orders':>8} {'clear_book':>11} {'clear_interval':>15} {'plain loop (peer)':>18} "
          f"{'ratio':>7} {'target':>8}")
    for n in (100, 1_000, 10_000):
        orders = random_book(n)
        book = OrderBook.from_orders(1, orders)
        local = clear_book(book, PARAMS.reference_price_micro_eur_per_kwh)
        assert (local.matched_energy_wh, local.clearing_price_micro_eur_per_kwh) == \
            plain_loop(orders)
        t_book = best_ms(lambda b=book: clear_book(b, PARAMS.reference_price_micro_eur_per_kwh),
                         repeat)
        t_full = best_ms(lambda o=orders: clear_interval(1, o, PARAMS, BATTERY, 100_000,
                                                         (-50_000, 50_000)), repeat)
        t_peer = best_ms(lambda o=orders: plain_loop(o), repeat)
        target = "<= 50" if n == 10_000 else ""
        verdict = ("ok" if t_book <= 50 else "MISSED") if target else ""
        print(f"{n:>8} {t_book:>11.2f} {t_full:>15.2f} {t_peer:>18.2f} {t_peer / t_book:>6.1f}x "
              f"{target:>6} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bench_clearing(args.repeat)


if __name__ == "__main__":
    main()
