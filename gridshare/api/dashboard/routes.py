"""The dashboard's routes: the page (``/dashboard/``), its two static files and the read-only
JSON it polls (``/dashboard/api/...``). Everything is public, as the API's aggregates are; a
member's own view calls the API's private reads (``/v1/members/{address}/...``) with the
member's signed headers, it has no route here."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from ..errors import ApiError
from .data import MAX_HOURS, DashboardData
from .feeder import feeder_graph

STATIC = Path(__file__).resolve().parent / "static"
#: The files the page is made of (nothing else under ``static`` is served).
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
#: Hours of history a snapshot shows unless asked otherwise.
DEFAULT_HOURS = 6.0
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


def dashboard_of(request: Request) -> DashboardData:
    """The app's :class:`DashboardData` (made by :func:`mount_dashboard`)."""
    return request.app.state.dashboard


@router.get("/dashboard")
def dashboard_redirect() -> RedirectResponse:
    return RedirectResponse("/dashboard/", status_code=307)


@router.get("/dashboard/")
def dashboard_page() -> FileResponse:
    """The page: one HTML file (the script and style sheet it loads are below)."""
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=NO_CACHE)


@router.get("/dashboard/static/{name}")
def dashboard_static(name: Annotated[str, PathParam(pattern=r"^[a-z.]+$")]) -> FileResponse:
    if name not in STATIC_FILES:
        raise ApiError(404, "not_found", f"no dashboard file {name}")
    return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers=NO_CACHE)


@router.get("/dashboard/api/feeder")
def dashboard_feeder(request: Request) -> dict[str, Any]:
    """The feeder as a graph (buses with layout coordinates 0..1, branches, flexibilities)."""
    return feeder_graph(request.app.state.api.deployment.feeder)


@router.get("/dashboard/api/snapshot")
def dashboard_snapshot(
    request: Request,
    hours: Annotated[float, Query(gt=0, le=MAX_HOURS, description="hours of history")]
    = DEFAULT_HOURS,
) -> JSONResponse:
    """Health, bus voltages, bands vs metered power, compliance and intervals (see
    :mod:`gridshare.api.dashboard.data`); ``Server-Timing`` says what it cost, in ms."""
    t0 = time.perf_counter()
    out = dashboard_of(request).snapshot(hours)
    ms = (time.perf_counter() - t0) * 1000.0
    out["server_ms"] = round(ms, 2)
    return JSONResponse(out, headers={**NO_CACHE, "Server-Timing": f"snapshot;dur={ms:.2f}"})


@router.get("/dashboard/api/tx/{tx_hash}")
def dashboard_tx(request: Request,
                 tx_hash: Annotated[str, PathParam(pattern=r"^0x[0-9a-fA-F]{64}$")]
                 ) -> dict[str, Any]:
    """A transaction the page links to: block, sender, contract, status, gas and the names of
    the events it emitted (from the node; the page needs no block explorer)."""
    api = request.app.state.api
    w3 = api.chain.w3
    try:
        tx = w3.eth.get_transaction(tx_hash)
        receipt = w3.eth.get_transaction_receipt(tx_hash)
    except Exception as exc:
        if "not found" in str(exc).lower() or type(exc).__name__ == "TransactionNotFound":
            raise ApiError(404, "not_found", f"no transaction {tx_hash} on this chain") from None
        raise
    names = {c.address.lower(): n for n, c in (("GridMarket", api.mc.market),
                                                ("GridCapacity", api.mc.capacity))}
    events = [_event_name(api, entry) for entry in receipt["logs"]]
    return {"tx_hash": tx_hash, "block_number": int(receipt["blockNumber"]),
            "from": tx["from"], "to": tx["to"],
            "to_name": names.get(str(tx["to"]).lower()), "status": int(receipt["status"]),
            "gas_used": int(receipt["gasUsed"]), "events": events}


def _event_name(api: Any, entry: Any) -> str:
    """Name of the event of log ``entry`` (through the readers' topic tables)."""
    topic = entry["topics"][0] if entry["topics"] else None
    for reader in (api.mc.reader, api.audit.reader):
        event = reader._events.get(topic)  # the readers' own ABI table
        if event is not None:
            return str(event.event_name)
    return "unknown"


def mount_dashboard(app: FastAPI, warm: bool = True) -> None:
    """Serve the dashboard on ``app`` (made by ``create_app``). ``warm``: in a background
    thread, build the feeder graph (loading a feeder takes seconds) and, on an RPC node, a
    first snapshot (decoding the logs of a day takes seconds too), so the first page is fast."""
    app.state.dashboard = DashboardData(app.state.api)
    app.include_router(router)
    if warm:
        threading.Thread(target=_warm, args=(app,), daemon=True, name="dashboard-warm").start()


def _warm(app: FastAPI) -> None:
    api = app.state.api
    try:
        feeder_graph(api.deployment.feeder)
        if not api.chain.is_embedded:  # the embedded chain is not for concurrent callers
            app.state.dashboard.snapshot(DEFAULT_HOURS)
    except Exception:  # the request that needs it reports the problem
        return


__all__ = ["STATIC", "mount_dashboard", "router"]


