"""What the API's Observe middleware (request id, HTTP metrics, one access line) adds per request.

Run on demand, never as part of the test suite::

    .venv/bin/python bench/observe_overhead.py [--requests 20000] [--format json|text]

In one process, with no network: a minimal ASGI app that answers 200 is called directly, then the same app
wrapped in `Observe`, interleaved in rounds; the access line goes through `cellblock.logs` (the chosen format)
into /dev/null. Prints the median microseconds per request of each and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry
from starlette.routing import Route

from cellblock.logs import configure
from cellblock.observability.http import HttpMetrics, Observe

SCOPE = {"type": "http", "method": "GET", "path": "/v1/jobs/0123", "headers": [(b"x-request-id", b"bench-1")]}


async def bare(scope: Any, receive: Any, send: Any) -> None:
    scope["route"] = ROUTE
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def endpoint(_: Any) -> None: ...


ROUTE = Route("/v1/jobs/{job_id}", endpoint)


async def rounds(app: Any, count: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_: Any) -> None: ...

    started = time.perf_counter()
    for _ in range(count):
        await app(dict(SCOPE), receive, send)
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--format", choices=["json", "text"], default="json")
    args = parser.parse_args()
    configure(args.format, "INFO")
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # type: ignore[attr-defined]  # noqa: SIM115
    observed = Observe(bare, HttpMetrics(CollectorRegistry()), [ROUTE])
    per_round = max(1, args.requests // 20)
    plain, wrapped = [], []
    for _ in range(20):
        plain.append(asyncio.run(rounds(bare, per_round)))
        wrapped.append(asyncio.run(rounds(observed, per_round)))
    base, with_observe = statistics.median(plain), statistics.median(wrapped)
    print(
        f"bare ASGI app: {base:.1f} us/request; with Observe ({args.format} access line): {with_observe:.1f} "
        f"us/request; added {with_observe - base:.1f} us"
    )


if __name__ == "__main__":
    main()
