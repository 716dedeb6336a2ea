"""One place that turns every failure into ``{"error": {"code", "message", "field"}}``.

User faults are 4xx naming the field; our faults are 5xx without internals. No traceback, no user source and
no user output ever appears in a response.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cellblock.errors import CellblockError, UserError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error with our shape; raise it from a route."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def _field_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        kind = str(first.get("type", ""))
        code = {"json_invalid": "malformed_json", "extra_forbidden": "unknown_field",
                "missing": "missing_field"}.get(kind, "validation_failed")  # fmt: skip
        field = _field_of(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid request"))
        if kind == "json_invalid":
            field, message = None, "the request body is not valid JSON"
        return JSONResponse(error_body(code, f"{field}: {message}" if field else message, field), status_code=422)

    @app.exception_handler(CellblockError)
    async def ours(_: Request, exc: CellblockError) -> JSONResponse:
        if isinstance(exc, UserError):  # every user fault names a field of the request: 422
            return JSONResponse(error_body(exc.code, exc.message, exc.field), status_code=422)
        log.error("internal error: %s", exc.message)
        return JSONResponse(error_body(exc.code, "internal error"), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", type(exc).__name__)
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)
