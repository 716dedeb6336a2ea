"""GET /metrics on the API: its own HTTP metrics, plus the cluster's, read from the job store at scrape time.

At each scrape the API reads, from Redis (or the RabbitMQ broker for the backlog): the backlog of every
language queue, every live worker's slots and busy slots (its WorkerInfo and its running set), and the job
metrics workers recorded (`jobstats`). These cluster-wide series are the same from every API replica: sum
them over one replica only (the dashboard takes `max` across instances).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from cellblock.config import Settings
from cellblock.observability import BACKLOG, BUSY, SLOTS, jobstats
from cellblock.observability.http import HttpMetrics, Observe
from cellblock.state import METRICS_KEY, running_key

if TYPE_CHECKING:  # the API imports this module while it is itself being imported
    from cellblock.api.runtime import ApiRuntime

log = logging.getLogger(__name__)


class ApiMetrics:
    """What the API process holds for /metrics: a registry of its own (no global state) and its HTTP metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = HttpMetrics(self.registry)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, …


class _Families:
    """A collector handing out families gathered beforehand (the Redis reads are async; collect() is not)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def cluster_families(rt: ApiRuntime) -> list[Metric]:
    """Backlog per queue, slots per worker, and the job metrics. A broker that does not answer leaves the backlog
    out; a job store that does not answer fails the scrape (503, like every route that needs it)."""
    families: list[Metric] = []
    backlog = GaugeMetricFamily(BACKLOG, "Jobs waiting in each language queue.", labels=["queue"])
    try:
        for queue, depth in sorted((await rt.backlog()).items()):
            backlog.add_metric([queue], depth)
        families.append(backlog)
    except Exception as exc:  # a broker that does not answer must not take the rest of the scrape with it
        log.warning("metrics: backlog unavailable: %s", type(exc).__name__)
    redis: Any = rt.store.redis
    workers = await rt.store.workers()
    async with redis.pipeline(transaction=False) as pipe:
        for worker in workers:
            pipe.scard(running_key(worker.name))
        busy = await pipe.execute() if workers else []
    slots = GaugeMetricFamily(SLOTS, "Sandbox slots of each live worker.", labels=["worker", "host"])
    running = GaugeMetricFamily(BUSY, "Slots of each live worker running a job now.", labels=["worker", "host"])
    for worker, count in zip(workers, busy, strict=True):
        slots.add_metric([worker.name, worker.host], worker.slots)
        running.add_metric([worker.name, worker.host], int(count))
    families += [slots, running, *jobstats.families(await redis.hgetall(METRICS_KEY))]
    return families


async def scrape(request: Request) -> Response:
    """Prometheus text format: this API process's metrics, then the cluster's."""
    metrics: ApiMetrics = request.app.state.metrics
    rt: ApiRuntime = request.app.state.runtime
    cluster = CollectorRegistry(auto_describe=False)
    cluster.register(_Families(await cluster_families(rt)))
    body = generate_latest(metrics.registry) + generate_latest(cluster)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the Observe middleware (outermost: call this after every other add_middleware) and GET /metrics."""
    from cellblock.api.auth import require

    metrics = ApiMetrics()
    app.state.metrics = metrics
    app.add_middleware(Observe, metrics=metrics.http, routes=app.router.routes)
    dependencies = [] if settings.metrics_open else [Depends(require("read"))]
    app.add_api_route("/metrics", scrape, methods=["GET"], dependencies=dependencies, response_class=Response,
                      summary="Prometheus metrics: HTTP requests, backlog, workers' slots, jobs, times",
                      responses={200: {"content": {"text/plain": {}}}})  # fmt: skip
