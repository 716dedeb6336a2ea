"""One place that turns every failure into ``{"error": {"code", "message", "field"}}``.

User faults are 4xx naming the field; our faults are 5xx without internals. No traceback, no user source and
no user output ever appears in a response.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from cellblock.errors import CellblockError, UserError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error with our shape; raise it from a route."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable machine-readable code.", examples=["validation_failed"])
    message: str = Field(description="What is wrong, for a person.", examples=["limits.cpu_time_s: too high"])
    field: str | None = Field(description="The request field at fault, when there is one.",
                              examples=["limits.cpu_time_s"])  # fmt: skip


class ErrorBody(BaseModel):
    """Every error the API answers has this shape."""

    error: ErrorDetail = Field(description="The error.", examples=[{"code": "not_found", "message": "no job",
                                                                     "field": "id"}])  # fmt: skip


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "No API key, or a bad one.", 403: "The API key lacks the scope.", 404: "Unknown id.",
        409: "The job has already finished.", 413: "The body is too large.",
        422: "A field is invalid (it is named).", 429: "Over the rate or a quota (see Retry-After).",
        503: "Backlog full, or the queue or store unavailable (see Retry-After).",
    }.items()
}  # fmt: skip


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
        if exc.status_code == 400:  # FastAPI could not even decode the body (e.g. it is not UTF-8)
            return JSONResponse(error_body("malformed_json", "the request body is not UTF-8 JSON"), status_code=400)
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))  # fmt: skip

    @app.exception_handler(redis.RedisError)
    async def store_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.error("job store unavailable: %s", type(exc).__name__)
        body = error_body("store_unavailable", "the job store (Redis) is unavailable; retry later")
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", type(exc).__name__)
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)
