"""The HTTP API: `create_app(settings)` → a FastAPI app with /v1 (and later /judge0, /api/v2).

The API never imports the sandbox or the engine: user code never runs in its process. It validates, stores
the job in Redis, hands the id to the dispatcher and answers (an id, the result, or a stream of events).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

from cellblock import __version__
from cellblock.api import judge0, web
from cellblock.api.auth import ApiAuth
from cellblock.api.errors import error_body, install_error_handlers
from cellblock.api.keys import router as keys_router
from cellblock.api.piston import router as piston_router
from cellblock.api.runtime import ApiRuntime
from cellblock.api.v1 import router as v1_router
from cellblock.config import Settings
from cellblock.observability.exporter import install as install_observability

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class BodyLimit:
    """413 for a body over the cap, whether announced by Content-Length or streamed in chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:  # fmt: skip
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI passes HTTPExceptions from body reading through as they are
                raise HTTPException(413, f"the request body is over {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send: Callable[[Message], Awaitable[None]]) -> None:
        import json

        body = json.dumps(error_body("body_too_large", f"the request body is over {self.max_bytes} bytes")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = ApiRuntime(settings)
        app.state.auth = ApiAuth(settings, app.state.runtime.store.redis)
        yield
        await app.state.runtime.close()

    app = FastAPI(
        title="Cellblock",
        version=__version__,
        description="Run untrusted code in many languages inside a Linux sandbox. Native API under /v1.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(v1_router)
    app.include_router(keys_router)
    judge0.install(app)
    app.include_router(piston_router)
    web.install(app)  # the UI at / and /assets (cellblock/api/web.py)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_kib * 1024)
    install_observability(app, settings)  # GET /metrics; request ids and HTTP metrics, outermost of all
    return app
