"""Rate limits: token buckets per client IP (every request) and per member address.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; a request takes one. An
empty bucket answers 429 ``rate_limited`` with ``Retry-After`` (whole seconds until a token is
back). The IP is the TCP peer (a proxy in front must limit by the original client itself). The
address bucket is charged only once an order's signature is verified, or a read's proof (a
forged request cannot drain another member's bucket). Buckets of idle keys (full again) are
dropped once more than ``max_keys`` are held, so memory stays bounded.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send


class RateLimited(Exception):  # noqa: N818 (an answer, not a failure)
    """A request over its bucket's rate; ``retry_after_s`` until the next token."""

    def __init__(self, what: str, retry_after_s: float) -> None:
        super().__init__(f"too many requests from {what}: retry in {retry_after_s:.2f} s")
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class RateLimiter:
    """Token buckets by key (thread-safe); rates per second."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s > 0, burst >= 1 and max_keys >= 1 are needed")
        self.rate_per_s = float(rate_per_s)
        self.burst = int(burst)
        self.max_keys = int(max_keys)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """Take a token for ``key``: None when allowed, else seconds until one is back."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > self.max_keys:
                    self._drop_idle(now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate_per_s

    def check(self, key: str, what: str) -> None:
        """:meth:`take`, raising RateLimited when the bucket is empty."""
        wait_s = self.take(key)
        if wait_s is not None:
            raise RateLimited(what, wait_s)

    def _drop_idle(self, now: float) -> None:
        full_after_s = self.burst / self.rate_per_s
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after_s}


def rate_limited_body(exc: RateLimited) -> bytes:
    """The JSON error of a 429 answer."""
    return json.dumps({"error": {"code": "rate_limited", "message": str(exc),
                                 "field": None}}).encode()


class IpRateLimitMiddleware:
    """429 for an HTTP request whose client IP is over its rate (before anything else runs)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            ip = client[0] if client else "unknown"
            try:
                self.limiter.check(ip, f"IP {ip}")
            except RateLimited as exc:
                body = rate_limited_body(exc)
                await send({"type": "http.response.start", "status": 429,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"retry-after", exc.retry_after_header.encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
