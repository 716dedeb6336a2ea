"""The API's outermost ASGI middleware: a request id per request, HTTP metrics, one access line.

Route labels are route templates (``/v1/jobs/{job_id}``), never raw paths, so the number of series stays
bounded whatever clients request; a request no route matches is labelled ``unmatched``. The request counter
moves when the response starts (so a client that has its answer sees the counter moved); the latency
histogram is observed when the response ends (a stream: when it closes). WebSockets get a request id only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute, Match

from cellblock.logs import REQUEST_ID, request_id_from

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUESTS = "cellblock_http_requests"  # exported as cellblock_http_requests_total
LATENCY = "cellblock_http_request_duration_seconds"
NAMES = (REQUESTS, LATENCY)
UNMATCHED = "unmatched"
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapers, every few seconds: DEBUG
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class HttpMetrics:
    """The API process's own HTTP metrics, in the given registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(REQUESTS, "HTTP requests answered, by method, route template and status.",
                                ["method", "route", "status"], registry=registry)  # fmt: skip
        self.latency = Histogram(LATENCY, "Time from a request's arrival to the end of its response.",
                                 ["method", "route"], buckets=LATENCY_BUCKETS_S, registry=registry)  # fmt: skip


def route_of(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that handled (or would handle) the request."""
    route = scope.get("route")  # set by Starlette's router once it has matched
    if route is None:  # answered before routing (e.g. 413 from BodyLimit): match it ourselves
        route = next((r for r in routes if r.matches(scope)[0] is Match.FULL), None)
    if route is None:
        return UNMATCHED
    return str(getattr(route, "path", "") or "/")


class Observe:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = request_id_from(headers.get(b"x-request-id", b"").decode("latin-1"))
        token = REQUEST_ID.set(request_id)
        try:
            if scope["type"] == "http":
                await self._http(scope, receive, send, request_id)
            else:
                await self.app(scope, receive, send)
        finally:
            REQUEST_ID.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        started = time.perf_counter()
        method = str(scope.get("method", ""))
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
                self.metrics.requests.labels(method, route_of(scope, self.routes), str(status)).inc()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = route_of(scope, self.routes)
            if status == 0:  # nothing was sent (the server drops the connection): count it as the 500 it is
                self.metrics.requests.labels(method, route, "500").inc()
            elapsed = time.perf_counter() - started
            self.metrics.latency.labels(method, route).observe(elapsed)
            # The path holds ids at most (never a query string: it is not logged).
            level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
            log.log(level, "%s %s %s %.1f ms", method, scope.get("path", ""), status or 500, elapsed * 1000)
