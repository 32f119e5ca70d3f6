"""Is the node up, is it still the deployment's chain, and what time is it there.

:class:`ChainWatch` is what the order gateway and its relay know about the node:

* **up or down**: :meth:`ChainWatch.probe` reads the latest block (number and timestamp) every
  ``probe_interval_s`` from the background thread; a failed probe or read marks the node down
  (``ChainUnavailable``, HTTP 503 ``chain_unavailable``) until a probe answers again;
* **the same chain**: :meth:`ChainWatch.verify_identity` compares the node with the identity
  recorded in the order store's ``meta`` table on first start (``gridshare.chain.identity``:
  chain id, genesis block, the deployment block, the contracts' code hashes) and with the
  deployment (its chain id; both contracts must have code). It runs before the first order is
  accepted, on every reconnect, when the head goes backwards and every ``identity_every_s``.
  A node that restarted empty or is another chain is a *reset* (``ChainResetError``, HTTP 503
  ``chain_reset``): nothing is accepted and nothing is relayed (so nothing is marked relayed)
  until the node is the recorded chain again;
* **chain time**: :meth:`ChainWatch.now_unix_s`, the later of the latest block's timestamp and
  the local clock (unix s): the contract checks deadlines and interval windows against block
  time, and a chain whose clock was moved ahead (the day simulation) is ahead of the wall clock.
  The block time is the one the background probe read; only when that is older than
  ``stale_s`` (no probing thread: the simulation, tests) is the node asked on the spot.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from gridshare.chain.errors import ChainError, ChainUnavailable
from gridshare.chain.identity import (
    NO_CODE,
    ChainIdentity,
    ChainResetError,
    chain_url,
    identity_problems,
    read_identity,
)

log = logging.getLogger(__name__)

#: Least age (s) of the last probe before a caller reads the node itself (see ``stale_s``).
STALE_MIN_S = 2.0


class ChainWatch:
    """The node's state as the gateway and the relay see it (see module docstring)."""

    def __init__(self, mc: Any, store: Any, *, probe_interval_s: float,
                 identity_every_s: float, clock: Callable[[], float] = time.time) -> None:
        self.chain = mc.chain
        self.store = store
        self.addresses = [mc.market.address, mc.capacity.address]
        self.anchor_block = int(mc.deployment.deploy_block)
        self.deployment_chain_id = int(mc.deployment.chain_id)
        self.probe_interval_s = probe_interval_s
        self.identity_every_s = identity_every_s
        self.stale_s = max(STALE_MIN_S, 4 * probe_interval_s)
        self.clock = clock
        self.chain_ok = True
        self.reset_reason: str | None = None
        self.last_block: int | None = None
        self.last_block_time: int | None = None
        self.last_error: str | None = None
        self.last_probe_monotonic = -math.inf
        self.last_identity_monotonic = -math.inf
        self._down_cause: BaseException | None = None
        self._lock = threading.RLock()

    @property
    def state(self) -> str:
        """``ok``, ``down`` (node unreachable) or ``reset`` (not the deployment's chain)."""
        if self.reset_reason is not None:
            return "reset"
        return "ok" if self.chain_ok else "down"

    def check_up(self) -> None:
        """Raise ``ChainResetError`` or ``ChainUnavailable`` when orders must be refused; checks
        the chain's identity first if it was never checked (blocking reads)."""
        if self.last_identity_monotonic == -math.inf:
            self.verify_identity()
        if self.reset_reason is not None:
            raise ChainResetError(self.reset_reason)
        if not self.chain_ok and time.monotonic() - self.last_probe_monotonic < \
                self.probe_interval_s:
            raise ChainUnavailable(self.chain.config.chain, ChainUnavailable.KNOWN_DOWN,
                                   self._down_cause)

    def needs_check(self) -> bool:
        """True when :meth:`check_up` or :meth:`now_unix_s` would read the chain."""
        return self.last_identity_monotonic == -math.inf or \
            time.monotonic() - self.last_probe_monotonic > self.stale_s

    def set_down(self, exc: BaseException) -> None:
        """Mark the node down after the failure ``exc``."""
        with self._lock:
            if self.chain_ok:
                log.warning("chain node unreachable, orders are refused with 503: %s", exc)
            self.chain_ok = False
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._down_cause = exc
            self.last_probe_monotonic = time.monotonic()

    def unavailable(self, exc: BaseException) -> ChainUnavailable:
        """The error of a node that counts as down after ``exc`` (one failed request)."""
        return ChainUnavailable(self.chain.config.chain, 1, exc)

    def probe(self) -> bool:
        """Read the latest block; on a reconnect, a head that went backwards or when due,
        verify the chain's identity. True when the node answers and is the recorded chain."""
        try:
            block = self.chain.w3.eth.get_block("latest")
        except Exception as exc:  # any failure to answer counts as down
            self.set_down(exc)
            return False
        with self._lock:
            number, stamp = int(block["number"]), int(block["timestamp"])
            went_back = self.last_block is not None and number < self.last_block
            was_down = not self.chain_ok
            if was_down:
                log.warning("chain node reachable again (block %d)", number)
            self.last_block, self.last_block_time = number, stamp
            self.chain_ok, self.last_error = True, None
            self.last_probe_monotonic = time.monotonic()
            due = time.monotonic() - self.last_identity_monotonic >= self.identity_every_s
        if was_down or went_back or due or self.reset_reason is not None:
            return self.verify_identity()
        return True

    def verify_identity(self) -> bool:
        """Compare the node with the recorded identity (recording it on first start); sets or
        clears :attr:`reset_reason`. False when the node is down or not the recorded chain."""
        try:
            found = read_identity(self.chain, self.addresses, self.anchor_block)
        except (ChainError, OSError) as exc:
            self.set_down(exc)
            return False
        problems = self._problems(found)
        with self._lock:
            self.last_identity_monotonic = time.monotonic()
            if problems:
                reason = (f"chain reset: the node at {chain_url(self.chain)} is not the "
                          f"deployment's chain ({'; '.join(problems)}): it restarted empty or "
                          "is another chain; deploy again and serve the new deployment with a "
                          "new order store (orders are neither accepted nor relayed)")
                if reason != self.reset_reason:
                    log.error("%s", reason)
                self.reset_reason = reason
                return False
            if self.reset_reason is not None:
                log.warning("the node is the deployment's chain again")
            self.reset_reason = None
        return True

    def _problems(self, found: ChainIdentity) -> list[str]:
        """What is wrong with ``found`` against the deployment and the recorded identity; the
        identity is recorded when nothing is and nothing is wrong."""
        problems = []
        if found.chain_id != self.deployment_chain_id:
            problems.append(f"chain id {found.chain_id}, deployment {self.deployment_chain_id}")
        recorded = ChainIdentity.from_meta(self.store.meta())
        if recorded is not None:
            return problems + identity_problems(recorded, found)
        problems += [f"no contract code at {address}"
                     for address, code in found.code_hashes.items() if code == NO_CODE]
        if not problems:
            self.store.set_meta(found.as_meta())
        return problems

    def now_unix_s(self) -> int:
        """Chain time: the later of the latest block's timestamp (probed at most ``stale_s``
        ago) and the local clock, unix s."""
        if time.monotonic() - self.last_probe_monotonic > self.stale_s:
            self.probe()
        return max(int(self.clock()), int(self.last_block_time or 0))
