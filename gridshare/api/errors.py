"""JSON errors of the API: ``{"error": {"code", "message", "field"}}`` for every 4xx/5xx.

Status codes: 400 malformed JSON; 413 body too large; 422 wrong or missing fields and order
validation failures (``field`` names the request field); 401 a member-private read without a
valid signed proof, 403 with another member's; 403 unknown prosumer; 409 replayed nonce, closed
interval or the prosumer's order quota of an interval used up; 404 unknown path or object;
429 over a rate limit (``Retry-After``); 503 chain node unreachable (``ChainUnavailable``: code
``chain_unavailable``, nothing stored), not the deployment's chain any more (``ChainResetError``:
code ``chain_reset``) or another chain failure (``chain_error``).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from web3.exceptions import BadFunctionCallOutput

from gridshare.chain.errors import ChainError, ChainUnavailable
from gridshare.chain.identity import ChainResetError
from market.orders import OrderError

from .limits import RateLimited

log = logging.getLogger(__name__)

#: HTTP status of each ``OrderError.code`` (default 422).
ORDER_ERROR_STATUS: dict[str, int] = {
    "unknown_prosumer": 403,
    "bad_nonce": 409,
    "interval_closed": 409,
    "too_many_orders": 409,
    "market_paused": 503,
}
#: Seconds a client should wait after a 503 (node down: it may be back soon; reset: not).
RETRY_AFTER_DOWN_S = "1"
RETRY_AFTER_RESET_S = "30"


class ApiError(Exception):
    """An error answer with a status, a code and a message naming the problem."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_response(status: int, code: str, message: str, field: str | None = None,
                   details: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "field": field}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _loc(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        details = [{"field": _loc(e.get("loc", ())), "type": e.get("type"),
                    "message": e.get("msg")} for e in errors]
        if any(e.get("type") == "json_invalid" for e in errors):
            first = next(e for e in errors if e.get("type") == "json_invalid")
            ctx = first.get("ctx") or {}
            return error_response(400, "malformed_json",
                                  f"request body is not valid JSON: {ctx.get('error', '')}".strip(),
                                  None, details)
        if any(e.get("type") == "model_attributes_type" and tuple(e.get("loc", ())) == ("body",)
               for e in errors):
            return error_response(400, "malformed_json", "request body must be a JSON object "
                                  "(Content-Type: application/json)", None, details)
        first = errors[0] if errors else {}
        field = _loc(first.get("loc", ()))
        return error_response(422, "invalid_request", f"{field}: {first.get('msg', 'invalid')}",
                              field, details)

    @app.exception_handler(ApiError)
    async def _api(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(OrderError)
    async def _order(_request: Request, exc: OrderError) -> JSONResponse:
        return error_response(ORDER_ERROR_STATUS.get(exc.code, 422), exc.code, str(exc),
                              getattr(exc, "field", None))

    @app.exception_handler(RateLimited)
    async def _limited(_request: Request, exc: RateLimited) -> JSONResponse:
        return error_response(429, "rate_limited", str(exc),
                              headers={"Retry-After": exc.retry_after_header})

    @app.exception_handler(ChainUnavailable)
    async def _down(_request: Request, exc: ChainUnavailable) -> JSONResponse:
        return error_response(503, "chain_unavailable", str(exc),
                              headers={"Retry-After": RETRY_AFTER_DOWN_S})

    @app.exception_handler(ChainResetError)
    async def _reset(_request: Request, exc: ChainResetError) -> JSONResponse:
        return error_response(503, "chain_reset", str(exc),
                              headers={"Retry-After": RETRY_AFTER_RESET_S})

    @app.exception_handler(BadFunctionCallOutput)
    async def _no_code(request: Request, exc: BadFunctionCallOutput) -> JSONResponse:
        # a call that returned nothing: the contract is gone (a node restarted empty)?
        watch = request.app.state.api.gateway.watch
        if not await anyio.to_thread.run_sync(watch.verify_identity) and \
                watch.reset_reason is not None:
            return await _reset(request, ChainResetError(watch.reset_reason))
        return error_response(503, "chain_error", f"chain error: {exc}",
                              headers={"Retry-After": RETRY_AFTER_DOWN_S})

    @app.exception_handler(ChainError)
    async def _chain(_request: Request, exc: ChainError) -> JSONResponse:
        return error_response(503, "chain_error", f"chain error: {exc}",
                              headers={"Retry-After": RETRY_AFTER_DOWN_S})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")
