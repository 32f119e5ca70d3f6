"""Fixtures of the market tests: keys, the EIP-712 domain and order factories."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from market.orders import MarketDomain, Order, PlacedOrder, Side

MARKET_ADDRESS = "0x" + "ab" * 20
CHAIN_ID = 1337
FAR_DEADLINE_UNIX_S = 4_000_000_000


@pytest.fixture(scope="session")
def domain() -> MarketDomain:
    return MarketDomain(CHAIN_ID, MARKET_ADDRESS)


@pytest.fixture(scope="session")
def accounts() -> list[LocalAccount]:
    """Ten deterministic prosumer keys (private keys 1..10)."""
    return [Account.from_key((i + 1).to_bytes(32, "big")) for i in range(10)]


PlaceFn = Callable[[Sequence[tuple[int, Side, int, int]]], list[PlacedOrder]]


@pytest.fixture(scope="session")
def place(domain: MarketDomain, accounts: list[LocalAccount]) -> PlaceFn:
    """Build placed orders from ``(prosumer index, side, energy Wh, price)`` rows.

    Nonces count per prosumer; ``placed_seq`` is the row number; interval 7.
    """

    def _place(rows: Sequence[tuple[int, Side, int, int]], interval: int = 7) -> list[PlacedOrder]:
        nonces: dict[int, int] = {}
        out = []
        for seq, (who, side, energy_wh, price) in enumerate(rows):
            nonce = nonces.get(who, 0)
            nonces[who] = nonce + 1
            order = Order(accounts[who].address, interval, side, energy_wh, price, nonce,
                          FAR_DEADLINE_UNIX_S)
            out.append(PlacedOrder(order, domain.digest(order), seq))
        return out

    return _place
