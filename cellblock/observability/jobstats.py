"""Job metrics: recorded by workers into the job store, turned into Prometheus families by the API.

A job's metrics are written in the same Redis transaction that stores its result (`worker.finish`; a job
cancelled while queued: `AsyncStore.cancel`), so each finished job is counted exactly once, whichever worker
of whichever host ran it, and a redelivered job is not counted twice. They live in one hash (`METRICS_KEY`)
of bounded size: one field per (metric, labels, bucket), labels from closed sets (language, state, verdict,
step, isolation). Histogram buckets are stored as plain counts (the bucket a value falls in) and summed up at export,
so an observation costs two HINCRBYs.
"""

from __future__ import annotations

import functools
import json
import logging
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from cellblock.errors import UnknownLanguage
from cellblock.languages.registry import Registry
from cellblock.models import ISOLATIONS, JobResult
from cellblock.state import METRICS_KEY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistogramSpec:
    name: str
    documentation: str
    labels: tuple[str, ...]
    buckets_s: tuple[float, ...]  # upper bounds, ascending; +Inf is implied


JOBS = "cellblock_jobs"  # exported as cellblock_jobs_total
JOBS_LABELS = ("language", "state", "verdict")
HOST_JOBS = "cellblock_host_jobs"  # exported as cellblock_host_jobs_total; host names, unlike worker names, persist
RUNS = "cellblock_runs"  # exported as cellblock_runs_total{isolation}: one per step (compile, test run) of a job
QUEUE = HistogramSpec(
    "cellblock_job_queue_seconds",
    "Time a job waited between submission and a worker starting it.",
    ("language",),
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RUN = HistogramSpec(
    "cellblock_job_run_seconds",
    "Time a worker spent on a job: every compile, test and check.",
    ("language",),
    (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
OVERHEAD = HistogramSpec(
    "cellblock_sandbox_overhead_seconds",
    "A sandboxed step's time beyond the program's own wall time: namespaces, cgroups, launch, cleanup.",
    ("language", "step"),
    (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1),
)
HISTOGRAMS = {spec.name: spec for spec in (QUEUE, RUN, OVERHEAD)}
NAMES = (JOBS, HOST_JOBS, RUNS, *HISTOGRAMS)


@dataclass
class JobSample:
    """What one finished job adds to the metrics."""

    language: str
    state: str
    verdict: str
    queue_s: float | None = None
    run_s: float | None = None
    overheads: list[tuple[str, float]] = field(default_factory=list)  # (step kind: compile | run, seconds)
    host: str | None = None  # the worker's host; None when no worker ran it (cancelled while queued)
    isolations: list[str] = field(default_factory=list)  # each step's StepResult.isolation (models.ISOLATIONS)


@functools.cache
def _registry() -> Registry:
    return Registry.load()  # static data, read once per process


def canonical_language(name: str) -> str:
    """The registry's name for a language (a job that never ran keeps the alias it was submitted with), or
    "unknown": labels stay within the registry's names, whatever a job hash holds."""
    try:
        return _registry().get(name).name
    except UnknownLanguage:
        return "unknown"


def sample_of(result: JobResult, overheads: list[tuple[str, float]] | None = None) -> JobSample:
    verdict = result.verdict.value if result.verdict else "none"
    steps = [result.compile, *(test.run for test in result.tests)]
    sample = JobSample(
        canonical_language(result.language), result.state.value, verdict, overheads=list(overheads or []),
        isolations=[step.isolation for step in steps if step is not None],
    )  # fmt: skip
    if result.started_at is not None:
        sample.queue_s = max(0.0, (result.started_at - result.created_at).total_seconds())
        if result.finished_at is not None:
            sample.run_s = max(0.0, (result.finished_at - result.started_at).total_seconds())
    return sample


def _field(metric: str, labels: tuple[str, ...], part: str) -> str:
    return json.dumps([metric, list(labels), part], separators=(",", ":"))


def _observe(pipe: Any, spec: HistogramSpec, labels: tuple[str, ...], value: float) -> None:
    bucket = bisect_left(spec.buckets_s, value)  # the first bound >= value; len(buckets_s) is +Inf
    pipe.hincrby(METRICS_KEY, _field(spec.name, labels, str(bucket)), 1)
    pipe.hincrbyfloat(METRICS_KEY, _field(spec.name, labels, "sum"), value)


def record(pipe: Any, sample: JobSample) -> None:
    """Queue the sample's commands on `pipe` (a sync or async redis pipeline), in the caller's transaction."""
    pipe.hincrby(METRICS_KEY, _field(JOBS, (sample.language, sample.state, sample.verdict), "count"), 1)
    if sample.host is not None:
        pipe.hincrby(METRICS_KEY, _field(HOST_JOBS, (sample.host,), "count"), 1)
    if sample.queue_s is not None:
        _observe(pipe, QUEUE, (sample.language,), sample.queue_s)
    if sample.run_s is not None:
        _observe(pipe, RUN, (sample.language,), sample.run_s)
    for step, seconds in sample.overheads:
        _observe(pipe, OVERHEAD, (sample.language, step), max(0.0, seconds))
    for isolation in sample.isolations:
        label = isolation if isolation in ISOLATIONS else "unknown"  # closed set, whatever a sample holds
        pipe.hincrby(METRICS_KEY, _field(RUNS, (label,), "count"), 1)


def families(raw: dict[str, str]) -> list[Metric]:
    """The hash's contents as Prometheus families (cumulative buckets); unreadable fields are skipped."""
    jobs = CounterMetricFamily(JOBS, "Jobs finished, by language, final state and verdict.", labels=JOBS_LABELS)
    hosts = CounterMetricFamily(HOST_JOBS, "Jobs finished by the workers of each host.", labels=["host"])
    runs = CounterMetricFamily(RUNS, "Steps (compiles, test runs) of finished jobs, by the isolation that ran each: "
                               "fresh, warm, warm-shared or prewarmed.", labels=["isolation"])  # fmt: skip
    counts: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}
    for key, value in raw.items():
        try:
            metric, labels, part = json.loads(key)
            labels, number = tuple(str(v) for v in labels), float(value)
        except (ValueError, TypeError):
            log.warning("metrics: unreadable field in %s skipped", METRICS_KEY)
            continue
        if metric == JOBS and len(labels) == len(JOBS_LABELS):
            jobs.add_metric(labels, number)
        elif metric == HOST_JOBS and len(labels) == 1:
            hosts.add_metric(labels, number)
        elif metric == RUNS and len(labels) == 1:
            runs.add_metric(labels, number)
        elif metric in HISTOGRAMS and len(labels) == len(HISTOGRAMS[metric].labels):
            counts.setdefault((metric, labels), {})[str(part)] = number
    out: list[Metric] = [jobs, hosts, runs]
    for spec in HISTOGRAMS.values():
        family = HistogramMetricFamily(spec.name, spec.documentation, labels=spec.labels)
        for (metric, labels), parts in sorted(counts.items()):
            if metric == spec.name:
                family.add_metric(labels, _cumulative(spec, parts), parts.get("sum", 0.0))
        out.append(family)
    return out


def _cumulative(spec: HistogramSpec, parts: dict[str, float]) -> list[tuple[str, float]]:
    bounds = [str(floatToGoString(b)) for b in spec.buckets_s] + ["+Inf"]  # type: ignore[no-untyped-call]
    total, buckets = 0.0, []
    for index, bound in enumerate(bounds):
        total += parts.get(str(index), 0.0)
        buckets.append((bound, total))
    return buckets
