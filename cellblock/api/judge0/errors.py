"""Judge0's error shapes under /judge0, whatever raised them.

* 422: the ActiveModel errors hash ``{"field": ["message"]}``;
* 400 / 503 (and our 429): ``{"error": "..."}`` (503 from a full backlog is Judge0's ``"queue is full"``);
* 401 / 403: an empty body (Rails' ``head :unauthorized`` / ``head :forbidden``);
* 404 and a body that is not JSON: Rails' exception JSON, ``{"status": 404, "error": "Not Found"}``.

The app's own handlers (`cellblock.api.errors`) stay in charge of every other path: `install` wraps each of
them with one that looks at the path first. Errors raised by shared dependencies (API keys, the job store)
arrive here in our shape and leave in Judge0's.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, RootModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from cellblock.api.errors import ApiError
from cellblock.errors import CellblockError, UserError

log = logging.getLogger(__name__)
PREFIX = "/judge0"
REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
           500: "Internal Server Error"}  # fmt: skip
# Our validation fields → Judge0's request fields.
FIELD_NAMES = {"language": "language_id", "network": "enable_network", "callback_url": "callback_url",
               "stdin": "stdin", "args": "command_line_arguments", "compile_options": "compiler_options"}  # fmt: skip
LIMIT_FIELDS = {"cpu_time_s": "cpu_time_limit", "wall_time_s": "wall_time_limit", "memory_mib": "memory_limit",
                "processes": "max_processes_and_or_threads", "file_size_kib": "max_file_size"}  # fmt: skip


class Judge0Invalid(RootModel[dict[str, list[str]]]):
    """Judge0's 422 body: each invalid field with its messages."""

    model_config = {"json_schema_extra": {"examples": [{"language_id": ["can't be blank"]}]}}


class Judge0Message(BaseModel):
    """Judge0's 400 and 503 body."""

    error: str = Field(description="What is wrong.", examples=["invalid fields: [foo]"])


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Judge0Message, "description": "Judge0's bad request: invalid fields, wait not allowed, batch size."},
    401: {"description": "No or a bad X-Auth-Token (empty body, as Judge0)."},
    403: {"description": "X-Auth-User lacking, or the key lacks the scope (empty body, as Judge0)."},
    404: {"description": "Unknown token or language id: Rails' {status, error}."},
    422: {"model": Judge0Invalid, "description": "Judge0's ActiveModel errors hash: field → messages."},
    503: {"model": Judge0Message, "description": "The queue is full (Retry-After)."},
}


class Judge0Error(Exception):
    """Raise from a Judge0 route: `body` is sent as is (None: empty)."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers


class Invalid(Judge0Error):
    """Judge0's ActiveModel errors hash: {"field": ["message", ...]} (HTTP 422)."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(422, errors)
        self.errors = errors


def error(status: int, message: str) -> Judge0Error:
    return Judge0Error(status, {"error": message})


def rails(status: int) -> Judge0Error:
    return Judge0Error(status, {"status": status, "error": REASONS.get(status, "Error")})


def judge0_field(field: str | None) -> str:
    """Our field path (``files[0].content``, ``limits.cpu_time_s``) as the Judge0 request field."""
    if not field:
        return "base"
    if field.startswith("limits."):
        return LIMIT_FIELDS.get(field.removeprefix("limits."), field)
    if field.startswith("files[0]"):
        return "source_code"
    if field.startswith("files"):
        return "additional_files"
    return FIELD_NAMES.get(field.split(".")[0].split("[")[0], field)


def respond(exc: Judge0Error) -> Response:
    if exc.body is None:
        return Response(status_code=exc.status, headers=exc.headers)
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


def translate(exc: Exception) -> Judge0Error:  # noqa: PLR0911 - one answer per kind of error
    """Any exception raised under /judge0 as the Judge0 error a client of Judge0 expects."""
    if isinstance(exc, Judge0Error):
        return exc
    if isinstance(exc, ApiError):
        if exc.status in (401, 403):
            return Judge0Error(exc.status, None, exc.headers)
        if exc.status == 404:
            return rails(404)
        if exc.status == 422:
            return Judge0Error(422, {judge0_field(exc.field): [exc.message]})
        message = "queue is full" if exc.code == "backlog_full" else exc.message
        return Judge0Error(exc.status, {"error": message}, exc.headers)
    if isinstance(exc, UserError):
        return Judge0Error(422, {judge0_field(exc.field): [exc.message]})
    if isinstance(exc, RequestValidationError):
        return rails(400)
    if isinstance(exc, StarletteHTTPException):
        return Judge0Error(
            exc.status_code, {"status": exc.status_code, "error": REASONS.get(exc.status_code, str(exc.detail))}
        )
    if isinstance(exc, redis.RedisError):
        return Judge0Error(503, {"error": "the job store is unavailable; retry later"}, {"Retry-After": "5"})
    if not isinstance(exc, CellblockError):
        log.exception("judge0: unhandled error: %s", type(exc).__name__)
    return rails(500)


Handler = Callable[[Request, Any], Any]  # Starlette's handlers may be sync or async


def install(app: FastAPI) -> None:
    """Route exceptions under /judge0 to Judge0's shapes; every other path keeps the handler it had."""

    def wrap(previous: Handler | None) -> Handler:
        async def handler(request: Request, exc: Any) -> Response:
            if request.url.path.startswith(PREFIX + "/") or previous is None:
                return respond(translate(exc))
            answer = previous(request, exc)
            done: Response = await answer if inspect.isawaitable(answer) else answer
            return done

        return handler

    for kind in (ApiError, RequestValidationError, CellblockError, StarletteHTTPException, redis.RedisError,
                 Exception):  # fmt: skip
        app.exception_handlers[kind] = wrap(app.exception_handlers.get(kind))
    app.exception_handlers[Judge0Error] = wrap(None)
