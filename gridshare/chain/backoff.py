"""The one backoff helper of the service loops (oracle, order relay, ``wait_for_chain``).

``Backoff(initial_s, max_s, factor)`` hands out the delays ``initial_s``, ``initial_s * factor``,
``initial_s * factor**2``... each capped at ``max_s`` (``factor=1`` gives a fixed poll interval);
``reset()`` starts over after a success. ``sleep(delay_s, stop)`` waits but wakes early once the
stop flag is set (a ``threading.Event``, or a callable polled every ``STOP_POLL_S``), so SIGTERM
handlers that set a flag stop a loop promptly even during a long backoff.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

#: How often a callable stop flag is polled during a sleep (s).
STOP_POLL_S = 0.05

#: A stop flag: an event, a callable that returns True once the loop must stop, or None.
Stop = threading.Event | Callable[[], bool] | None


def stop_requested(stop: Stop) -> bool:
    """Whether ``stop`` is set (None never is)."""
    if stop is None:
        return False
    if isinstance(stop, threading.Event):
        return stop.is_set()
    return bool(stop())


def sleep(delay_s: float, stop: Stop = None) -> bool:
    """Sleep ``delay_s`` seconds, waking early once ``stop`` is set; True when stopped."""
    if stop is None:
        time.sleep(max(delay_s, 0.0))
        return False
    if isinstance(stop, threading.Event):
        return stop.wait(max(delay_s, 0.0))
    deadline = time.monotonic() + delay_s
    while not stop():
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            return False
        time.sleep(min(left_s, STOP_POLL_S))
    return True


class Backoff:
    """Exponential backoff delays in seconds: ``min(initial_s * factor**n, max_s)``."""

    def __init__(self, initial_s: float, max_s: float = math.inf, factor: float = 2.0) -> None:
        if min(initial_s, max_s) < 0 or factor < 1:
            raise ValueError(f"need initial_s, max_s >= 0 and factor >= 1, got initial_s="
                             f"{initial_s}, max_s={max_s}, factor={factor}")
        self.initial_s = min(float(initial_s), float(max_s))
        self.max_s = float(max_s)
        self.factor = float(factor)
        self._next_s = self.initial_s

    def next_delay_s(self) -> float:
        """The next delay (s); the one after it is ``factor`` times longer, up to ``max_s``."""
        delay_s = self._next_s
        self._next_s = min(delay_s * self.factor, self.max_s)
        return delay_s

    def reset(self) -> None:
        """Start over at ``initial_s`` (after a success)."""
        self._next_s = self.initial_s

    def sleep(self, stop: Stop = None) -> bool:
        """Sleep the next delay, waking early once ``stop`` is set; True when stopped."""
        return sleep(self.next_delay_s(), stop)
