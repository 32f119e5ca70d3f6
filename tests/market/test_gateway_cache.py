"""The gateway's read cache: concurrent misses of one key cost one chain read (a burst of
orders for a new interval must not become a burst of ``isOpen`` calls), and a failed read
reaches every waiter and is retried by the next caller."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from market.gateway.gateway import _Cache


def test_concurrent_misses_of_one_key_share_one_load() -> None:
    cache, loads = _Cache(ttl_s=10.0), []

    def load() -> int:
        loads.append(threading.get_ident())
        time.sleep(0.2)
        return 42

    with ThreadPoolExecutor(20) as pool:
        values = list(pool.map(lambda _i: cache.get("k", load), range(20)))
    assert values == [42] * 20 and len(loads) == 1
    assert cache.get("other", lambda: 7) == 7  # another key loads on its own


def test_a_failed_load_reaches_every_waiter_and_the_next_caller_retries() -> None:
    cache, calls = _Cache(ttl_s=10.0), []

    def failing() -> int:
        calls.append(1)
        time.sleep(0.2)
        raise ConnectionError("node down")

    def attempt(_i: int) -> str:
        try:
            cache.get("k", failing)
        except ConnectionError as exc:
            return str(exc)
        return "no error"

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(attempt, range(10)))
    assert outcomes == ["node down"] * 10 and len(calls) == 1
    assert cache.get("k", lambda: 5) == 5 and not cache.fresh("missing")
    with pytest.raises(ConnectionError):
        cache.get("j", failing)


def test_refresh_reloads_keys_in_use_and_lets_the_others_expire() -> None:
    """Keys asked for since their load are reloaded ahead of expiry; a key nobody asked for
    again (a past interval) does not take the budget from them."""
    cache, loads = _Cache(ttl_s=0.4), {"used": 0, "idle": 0}

    def loader(key: str):
        def load() -> str:
            loads[key] += 1
            return key
        return load

    cache.get("idle", loader("idle"))  # the oldest: first in line without the rule
    cache.get("used", loader("used"))
    time.sleep(0.34)  # past every key's refresh point (at most 0.8 ttl), before the ttl
    assert cache.get("used", loader("used")) == "used"  # a hit: in use
    assert cache.refresh(1) == 0  # the budget went to the key in use
    assert loads == {"used": 2, "idle": 1}
    time.sleep(0.1)
    assert cache.fresh("used") and not cache.fresh("idle")


def test_keys_loaded_together_are_refreshed_spread_over_the_ttl() -> None:
    """A burst of keys loaded at once (50 new prosumers) is not reloaded in one burst."""
    from market.gateway.gateway import _refresh_point

    points = [_refresh_point(f"0x{k:040x}") for k in range(200)]
    assert all(0.5 <= p <= 0.8 for p in points)
    assert min(points) < 0.55 and max(points) > 0.75 and len(set(points)) > 150
