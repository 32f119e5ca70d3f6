"""JSON errors of the API: ``{"error": {"code", "message", "field"}}`` for every 4xx/5xx.

Status codes: 400 malformed JSON; 413 body too large; 422 wrong or missing fields and order
validation failures; 403 unknown prosumer; 409 replayed nonce or closed interval; 404 unknown
path or object; 503 chain node unreachable (``ChainUnavailable``: code ``chain_unavailable``,
nothing stored) or another chain failure (``chain_error``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gridshare.chain.errors import ChainError, ChainUnavailable
from market.orders import OrderError

log = logging.getLogger(__name__)

#: HTTP status of each ``OrderError.code`` (default 422).
ORDER_ERROR_STATUS: dict[str, int] = {
    "unknown_prosumer": 403,
    "bad_nonce": 409,
    "interval_closed": 409,
}


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
        return error_response(ORDER_ERROR_STATUS.get(exc.code, 422), exc.code, str(exc))

    @app.exception_handler(ChainUnavailable)
    async def _down(_request: Request, exc: ChainUnavailable) -> JSONResponse:
        return error_response(503, "chain_unavailable", str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(ChainError)
    async def _chain(_request: Request, exc: ChainError) -> JSONResponse:
        return error_response(503, "chain_error", f"chain error: {exc}",
                              headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")
