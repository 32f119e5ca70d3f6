"""``create_app(...)``: the FastAPI application of one market deployment.

The app holds an :class:`~market.gateway.gateway.OrderGateway` (validation, SQLite store, relay to
the market contract), the deployment's :class:`market.chain.MarketChain` (settlements,
statements) and a :class:`~oracle.audit.CapacityAudit` (bands, readings). The background
thread (node probe, and the relay unless ``relay=False``) starts and stops with the app's
lifespan; without it, relaying is up to the caller: ``gateway.relay_once()`` in tests and in
the day simulation, or ``python -m market.gateway.relay`` in a process of its own (what
``gridshare serve`` does on an RPC node, so relaying does not compete with the requests for
the interpreter lock).

Request bodies above ``max_body_bytes`` are refused with 413 before they are read in full.
:class:`ApiSettings` sets the abuse limits: per-IP and per-address rate limits
(:mod:`gridshare.api.limits`, 429 with ``Retry-After``), the lifetime of a member's read
signature (:mod:`gridshare.api.auth`) and the CORS origins allowed to call the API from a browser
(none by default: no CORS headers at all).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridshare.chain.client import Chain
from gridshare.chain.deploy import Deployment
from market.battery import BatteryParams
from market.chain import MarketChain
from market.gateway.gateway import GatewaySettings, OrderGateway
from market.gateway.store import OrderStore
from oracle.audit import CapacityAudit

from .auth import AUTH_HEADERS, DEFAULT_MAX_LIFETIME_S, ReadVerifier
from .auth import router as auth_router
from .dashboard import mount_dashboard
from .errors import install_error_handlers
from .limits import IpRateLimitMiddleware, RateLimiter
from .routes_orders import members_router
from .routes_orders import router as orders_router
from .routes_read import audit_router
from .routes_read import router as read_router

#: Largest request body accepted (an order is ~500 bytes of JSON).
MAX_BODY_BYTES = 16 * 1024


@dataclass(frozen=True)
class ApiSettings:
    """Abuse limits of the API: rates per second, bursts in requests, lifetime in seconds;
    ``cors_origins``: origins a browser may call the API from (exact, e.g.
    ``https://community.example``; empty: no CORS)."""

    rate_per_ip_s: float = 2000.0
    burst_per_ip: int = 4000
    rate_per_address_s: float = 50.0
    burst_per_address: int = 100
    read_max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S
    cors_origins: tuple[str, ...] = ()


@dataclass
class ApiState:
    """What the routes use (``request.app.state.api``)."""

    chain: Chain
    deployment: Deployment
    mc: MarketChain
    gateway: OrderGateway
    audit: CapacityAudit
    interval_s: int
    reads: ReadVerifier
    address_limiter: RateLimiter
    device_ids: set[int] = field(default_factory=set)

    def limit_address(self, address: str) -> None:
        """Charge ``address``'s rate limit (RateLimited when it is over)."""
        self.address_limiter.check(address, f"address {address}")


class BodyLimitMiddleware:
    """Answer 413 when a request body exceeds ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def _reject(self, send: Send, size: str) -> None:
        body = json.dumps({"error": {
            "code": "payload_too_large",
            "message": f"request body of {size} bytes exceeds the limit of {self.max_bytes} "
                       "bytes",
            "field": None}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, declared.decode())
            return
        seen = 0
        too_large = False

        async def limited_receive() -> Message:
            # Past the limit the app gets an empty final chunk (whatever it makes of that is
            # replaced by the 413 below); FastAPI would turn an exception here into a 400.
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if too_large:
                if message["type"] == "http.response.start":
                    await self._reject(send, f"more than {self.max_bytes}")
                return
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


def create_app(
    chain: Chain,
    deployment: Deployment,
    *,
    db_path: str | Path = ":memory:",
    battery: BatteryParams | None = None,
    settings: GatewaySettings | None = None,
    clock: Callable[[], float] = time.time,
    relay: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
    worker_threads: int = 128,
    api_settings: ApiSettings | None = None,
) -> FastAPI:
    """The API of ``deployment`` on ``chain``; orders stored in the SQLite file ``db_path``."""
    limits = api_settings or ApiSettings()
    mc = MarketChain(chain, deployment, battery)
    store = OrderStore(db_path)
    gateway = OrderGateway(mc, store, settings, clock)
    audit = CapacityAudit.for_deployment(chain, deployment, mc.capacity)
    state = ApiState(chain=chain, deployment=deployment, mc=mc, gateway=gateway, audit=audit,
                     interval_s=int(deployment.interval_s),
                     reads=ReadVerifier.for_market(mc.domain, limits.read_max_lifetime_s),
                     address_limiter=RateLimiter(limits.rate_per_address_s,
                                                 limits.burst_per_address),
                     device_ids={int(d["device_id"]) for d in deployment.devices})
    gateway.admit = state.limit_address

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # order requests wait for the group commit in worker threads: allow one per client
        anyio.to_thread.current_default_thread_limiter().total_tokens = worker_threads
        gateway.start(relay=relay)  # relay=False: probe the node only
        try:
            yield
        finally:
            gateway.stop()

    app = FastAPI(
        title="gridshare market API",
        version="1",
        summary="Signed orders in; clearing results, statements, bands and the DSO audit out.",
        description=(
            "Units are in the field names: energy Wh, power W, prices micro-euro per kWh, "
            "money nano-euro, times unix seconds. Errors are JSON "
            '`{"error": {"code", "message", "field"}}`. See docs/api.md.'),
        lifespan=lifespan,
    )
    app.state.api = state
    install_error_handlers(app)
    app.include_router(orders_router)
    app.include_router(members_router)
    app.include_router(read_router)
    app.include_router(audit_router)
    app.include_router(auth_router)
    mount_dashboard(app)  # /dashboard/ (docs/dashboard.md)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(IpRateLimitMiddleware,
                       limiter=RateLimiter(limits.rate_per_ip_s, limits.burst_per_ip))
    if limits.cors_origins:  # outermost, so that refusals carry the CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=list(limits.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", *AUTH_HEADERS],
                           expose_headers=["Location", "Retry-After"], max_age=600)
    return app


def app_state(app: Any) -> ApiState:
    """The :class:`ApiState` of an app made by :func:`create_app`."""
    return app.state.api
