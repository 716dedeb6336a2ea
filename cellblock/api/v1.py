"""The native /v1 API: jobs, events, batches, languages, workers, health."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from cellblock.api.auth import require, reserve
from cellblock.api.errors import ERROR_RESPONSES, ApiError, error_body
from cellblock.api.runtime import ApiRuntime
from cellblock.api.schemas import (
    BatchAccepted,
    BatchSpec,
    BatchStatus,
    Health,
    JobAccepted,
    LanguageInfo,
    WorkersStatus,
)
from cellblock.api.store import NewJob
from cellblock.auth import ApiKey
from cellblock.dispatch import language_queue
from cellblock.models import JobResult, JobSpec, JobState
from cellblock.state import TERMINAL_STATES
from cellblock.validation import ValidJob, validate_job

router = APIRouter(responses=ERROR_RESPONSES)
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# The longest one GET /v1/batches/{id}?wait=true holds the request (a client loops while `done` is false): under
# common proxy idle timeouts, and short enough that a client that gave up is not waited for long.
BATCH_WAIT_MAX_S = 60.0
BATCH_WAIT_DOC = ("Answer once every job of the batch has finished (done, failed or cancelled), or after wait_s: "
                  "`done` says which. Loop while it is false.")  # fmt: skip
BATCH_WAIT_S_DOC = f"With wait=true: the longest to wait, in seconds (default and maximum {BATCH_WAIT_MAX_S:g})."
READ = [Depends(require("read"))]
Submitter = Annotated[ApiKey | None, Depends(require("submit"))]


def runtime(request: Request) -> ApiRuntime:
    rt: ApiRuntime = request.app.state.runtime
    return rt


def _check_id(job_id: str, field: str = "id") -> None:
    if not JOB_ID.match(job_id):
        raise ApiError(422, "validation_failed", f"{field} must be 32 lowercase hex characters", field)


async def _admit(rt: ApiRuntime, spec: JobSpec, field_prefix: str = "") -> ValidJob:
    """Validate against this server's limits and live workers; refuse when the backlog is too deep."""
    try:
        job = validate_job(spec, rt.settings, rt.registry)
    except Exception as exc:
        field = getattr(exc, "field", None)
        if field and field_prefix:
            exc.field = f"{field_prefix}.{field}"  # type: ignore[attr-defined]
        raise
    available = await rt.live_languages()
    if available and job.language.name not in available:
        field = f"{field_prefix}.language" if field_prefix else "language"
        raise ApiError(422, "language_unavailable", f"no live worker runs {job.language.name!r}; available: "
                       + ", ".join(sorted(available)), field)  # fmt: skip
    return job


async def _refuse_if_backlogged(rt: ApiRuntime, extra: int = 1) -> None:
    backlog = sum((await rt.backlog()).values())
    if backlog + extra > rt.settings.max_backlog:
        message = f"{backlog} jobs are waiting (limit {rt.settings.max_backlog}); retry later"
        raise ApiError(503, "backlog_full", message, headers={"Retry-After": "5"})


async def _enqueue(rt: ApiRuntime, jobs: list[tuple[str, ValidJob]], batch_id: str | None = None,
                   idempotency: str | None = None) -> None:  # fmt: skip
    """Store every job, then queue them (a batch in bundles); if queueing fails, store nothing."""
    new = [NewJob(job_id, job.spec, language_queue(job.language.name)) for job_id, job in jobs]
    await rt.store.create_jobs(new, batch_id, idempotency)
    try:
        await rt.dispatch([(job_id, job.language.name) for job_id, job in jobs], bundle=batch_id is not None)
    except BaseException:
        await rt.store.delete_jobs(new, batch_id)
        raise


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobAccepted,
    responses={200: {"model": JobResult, "description": "With ?wait=true: the finished job."}},
    summary="Submit a job",
)
async def submit_job(
    spec: JobSpec,
    request: Request,
    caller: Submitter,
    wait: Annotated[bool, Query(description="Answer with the result once the job has finished.")] = False,
    idempotency_key: Annotated[str | None, Header(description="Same key → same job, for retries.")] = None,
) -> Response:
    rt = runtime(request)
    job = await _admit(rt, spec)
    job_id = uuid.uuid4().hex
    key = idempotency_key or spec.idempotency_key
    if key and caller is not None:
        key = f"{caller.id}:{key}"  # each API key has its own idempotency keys: no job ids across tenants
    existing = await rt.store.existing_job_for_key(key) if key else None
    if existing is None:
        await _refuse_if_backlogged(rt)  # a refused request leaves its key free for the retry
        existing = await rt.store.claim_idempotency_key(key, job_id) if key else None
    if existing is not None:
        job_id = existing  # a retry: the same job, run once
    else:
        held = None
        try:
            held = await reserve(request, caller, [job_id])  # 429 over the API key's quotas
            await _enqueue(rt, [(job_id, job)], idempotency=key)
        except BaseException:
            if held is not None:
                await held.release()
            if key:
                await rt.store.release_idempotency_key(key, job_id)
            raise
    if wait:
        result = await rt.store.wait(job_id, rt.settings.job_time_limit_s)
        if result is not None and result.state in TERMINAL_STATES:
            return JSONResponse(json.loads(result.model_dump_json()), status_code=200)
    fields = await rt.store.job_fields(job_id)
    state = JobState(fields["state"]) if fields else JobState.QUEUED
    accepted = JobAccepted(id=job_id, state=state, url=f"/v1/jobs/{job_id}")
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202)


@router.get("/v1/jobs/{job_id}", response_model=JobResult, summary="A job's state, or its result once finished",
            dependencies=READ)  # fmt: skip
async def get_job(job_id: str, request: Request) -> JobResult:
    _check_id(job_id)
    result = await runtime(request).store.result(job_id)
    if result is None:
        raise ApiError(404, "not_found", f"no job {job_id} (unknown, or past its retention)", "id")
    return result


def _sse(entry_id: str, kind: str, data: object) -> bytes:
    if kind == "keepalive":
        return b": keepalive\n\n"
    return f"id: {entry_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@router.get(
    "/v1/jobs/{job_id}/events",
    summary="Server-sent events: state changes, steps, stdout/stderr as produced, then the result",
    response_class=StreamingResponse,
    dependencies=READ,
)
async def job_events(
    job_id: str,
    request: Request,
    last_event_id: Annotated[str | None, Header(description="Resume after this event id.")] = None,
) -> StreamingResponse:
    _check_id(job_id)
    rt = runtime(request)
    if await rt.store.job_fields(job_id) is None:
        raise ApiError(404, "not_found", f"no job {job_id}", "id")
    after = last_event_id if last_event_id and re.match(r"^\d+-\d+$", last_event_id) else "0-0"

    async def stream() -> AsyncIterator[bytes]:
        async for entry_id, kind, data in rt.store.events(job_id, after):
            yield _sse(entry_id, kind, data)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.delete("/v1/jobs/{job_id}", status_code=202, response_model=JobAccepted, summary="Cancel a job",
               dependencies=[Depends(require("submit"))])  # fmt: skip
async def cancel_job(job_id: str, request: Request) -> JobAccepted:
    _check_id(job_id)
    state = await runtime(request).store.cancel(job_id)
    if state is None:
        raise ApiError(404, "not_found", f"no job {job_id}", "id")
    if state != JobState.CANCELLED:
        raise ApiError(409, "already_finished", f"job {job_id} has already finished ({state.value})", "id")
    return JobAccepted(id=job_id, state=state, url=f"/v1/jobs/{job_id}")


@router.post("/v1/batches", status_code=202, response_model=BatchAccepted, summary="Submit many jobs at once")
async def submit_batch(batch: BatchSpec, request: Request, caller: Submitter) -> BatchAccepted:
    rt = runtime(request)
    if len(batch.jobs) > rt.settings.max_batch_jobs:
        raise ApiError(422, "too_many_jobs", f"{len(batch.jobs)} jobs; at most {rt.settings.max_batch_jobs}", "jobs")
    admitted = [await _admit(rt, spec, f"jobs[{i}]") for i, spec in enumerate(batch.jobs)]
    await _refuse_if_backlogged(rt, len(admitted))
    batch_id = uuid.uuid4().hex
    ids = [uuid.uuid4().hex for _ in admitted]
    held = await reserve(request, caller, ids)  # all of the batch or none against the API key's quotas
    try:
        await _enqueue(rt, list(zip(ids, admitted, strict=True)), batch_id)
    except BaseException:
        await held.release()
        raise
    return BatchAccepted(id=batch_id, jobs=ids, url=f"/v1/batches/{batch_id}")


@router.get("/v1/batches/{batch_id}", response_model=BatchStatus, summary="A batch: every job's state or result",
            dependencies=READ)  # fmt: skip
async def get_batch(
    batch_id: str,
    request: Request,
    wait: Annotated[bool, Query(description=BATCH_WAIT_DOC)] = False,
    wait_s: Annotated[
        float | None, Query(gt=0, le=BATCH_WAIT_MAX_S, description=BATCH_WAIT_S_DOC, examples=[30])
    ] = None,
) -> BatchStatus:
    _check_id(batch_id)
    if wait_s is not None and not wait:
        raise ApiError(422, "validation_failed", "wait_s: applies only with wait=true", "wait_s")
    rt = runtime(request)
    ids = await rt.store.batch_jobs(batch_id)
    if ids is None:
        raise ApiError(404, "not_found", f"no batch {batch_id}", "id")
    if wait:  # all results are read once, below, when the wait ends
        await rt.store.wait_batch(batch_id, ids, wait_s or BATCH_WAIT_MAX_S, request.is_disconnected)
    results = await rt.store.results(ids)
    states = Counter(r.state.value for r in results)
    verdicts = Counter(r.verdict.value for r in results if r.verdict is not None)
    done = all(r.state in TERMINAL_STATES for r in results)
    return BatchStatus(id=batch_id, total=len(ids), done=done, states=dict(states), verdicts=dict(verdicts),
                       jobs=results)  # fmt: skip


@router.get("/v1/languages", response_model=list[LanguageInfo], summary="Languages that live workers can run",
            dependencies=READ)  # fmt: skip
async def languages(request: Request) -> list[LanguageInfo]:
    rt = runtime(request)
    workers = await rt.store.workers()
    out = []
    for lang in rt.registry.languages:
        running = [w for w in workers if lang.name in w.languages]
        if not running:
            continue
        out.append(LanguageInfo(
            name=lang.name, display_name=lang.display_name, version=running[0].language_versions.get(lang.name),
            aliases=lang.aliases, judge0_ids=lang.judge0_ids, piston_name=lang.piston_name, compiled=lang.compiled,
            source_file=lang.source_file, workers=len(running),
        ))  # fmt: skip
    return out


@router.get("/v1/workers", response_model=WorkersStatus, summary="Live workers and the backlog per queue",
            dependencies=READ)  # fmt: skip
async def workers(request: Request) -> WorkersStatus:
    rt = runtime(request)
    return WorkersStatus(workers=await rt.store.workers(), backlog=await rt.backlog())


@router.get("/healthz", response_model=Health, summary="The API process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}}, summary="Ready to run jobs")
async def readyz(request: Request) -> Response:
    rt = runtime(request)
    problems = []
    if not await rt.store.ping():
        problems.append("the job store (Redis) does not answer")
    elif not await rt.store.workers():
        problems.append("no live worker")
    body = Health(status="ready" if not problems else "not ready", problems=problems)
    return JSONResponse(body.model_dump(), status_code=200 if not problems else 503)


__all__ = ["error_body", "language_queue", "router"]
