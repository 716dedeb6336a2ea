"""The API's asynchronous view of the job store (`state.py` keys): create, read, wait, stream, cancel."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from cellblock.config import Settings
from cellblock.logs import REQUEST_ID
from cellblock.models import JobResult, JobSpec, JobState
from cellblock.observability import jobstats
from cellblock.redis_url import redis_kwargs
from cellblock.sealing import Sealer
from cellblock.state import (
    BATCH_MEMBER_FINISHED_LUA,
    CANCEL_CHANNEL,
    REQUEST_ID_FIELD,
    TERMINAL_STATES,
    WORKERS,
    WorkerInfo,
    as_fields,
    batch_key,
    event,
    event_data,
    events_key,
    idempotency_key,
    job_key,
    new_job_fields,
    now_iso,
    queued_key,
    result_event,
    result_from_hash,
    retention_keys,
    seal_result,
    worker_key,
)

Event = tuple[str, str, Any]  # (stream id, type, data)
log = logging.getLogger(__name__)
BATCH_POLL_S = 0.02  # a batch long-poll reads the batch's `remaining` count this often (one HGET)
BATCH_SCAN_S = 1.0  # ... and its unfinished members' states this often whatever the count says


class NewJob(NamedTuple):
    id: str
    spec: JobSpec
    queue: str  # the language's queue (`dispatch.language_queue`): the job counts in its backlog until it starts


class AsyncStore:
    def __init__(self, settings: Settings, sealer: Sealer) -> None:
        self.settings = settings
        self.sealer = sealer
        # Any: redis-py 8's overloads type every reply as bytes | str | list | dict unions even with
        # decode_responses=True; the payloads are validated by pydantic models instead.
        # socket_timeout above the longest XREAD block (redis-py's default of 5 s would cut waits short).
        self.redis: Any = aioredis.Redis(
            **redis_kwargs(settings.job_store_url()), decode_responses=True, max_connections=512, socket_timeout=60
        )

    async def close(self) -> None:
        await self.redis.aclose()

    async def create_jobs(self, jobs: list[NewJob], batch_id: str | None = None,
                          idempotency: str | None = None) -> None:  # fmt: skip
        """Persist jobs (hash + first event + their place in the backlog) in one transaction, before anyone hears
        'accepted'.

        No expiry yet: a job's keys (and its batch's and idempotency key's) start their retention clock when the
        job finishes, so nothing about a queued job can expire however long the backlog is.
        """
        request_id = REQUEST_ID.get()  # the submitting request's, for the worker's log lines (cellblock.logs)
        async with self.redis.pipeline(transaction=True) as pipe:
            for job_id, spec, queue in jobs:
                fields = new_job_fields(job_id, spec, queue, self.sealer, batch_id)
                if idempotency:
                    fields["idempotency_key"] = idempotency
                if request_id:
                    fields[REQUEST_ID_FIELD] = request_id
                pipe.hset(job_key(job_id), mapping=fields)
                pipe.xadd(events_key(job_id), event("state", {"state": JobState.QUEUED.value}))
                pipe.sadd(queued_key(queue), job_id)
            if batch_id:
                pipe.hset(batch_key(batch_id), mapping={"created_at": now_iso(), "remaining": len(jobs),
                                                         "jobs": json.dumps([j.id for j in jobs])})  # fmt: skip
            await pipe.execute()
        if batch_id:
            log.info("batch %s: %d jobs stored", batch_id, len(jobs))
        for job in jobs:  # what ties the request id to the job ids in the API's log
            log.log(logging.DEBUG if batch_id else logging.INFO, "job %s stored (%s)", job.id, job.spec.language)

    async def delete_jobs(self, jobs: list[NewJob], batch_id: str | None = None) -> None:
        """Undo `create_jobs` when they could not be queued: nothing half-accepted is left."""
        keys = [k for job in jobs for k in (job_key(job.id), events_key(job.id))]
        if batch_id:
            keys.append(batch_key(batch_id))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*keys)
            for job in jobs:
                pipe.srem(queued_key(job.queue), job.id)
            await pipe.execute()

    async def existing_job_for_key(self, key: str) -> str | None:
        found = await self.redis.get(idempotency_key(key))
        return str(found) if found else None

    async def claim_idempotency_key(self, key: str, job_id: str) -> str | None:
        """The job id already bound to `key`, or None after binding it to `job_id`."""
        name = idempotency_key(key)
        if await self.redis.set(name, job_id, nx=True):  # expires with its job (worker.finish)
            return None
        existing = await self.redis.get(name)
        return str(existing) if existing else None

    async def release_idempotency_key(self, key: str, job_id: str) -> None:
        """Free `key` if it still names `job_id` (the submission failed after claiming it)."""
        name = idempotency_key(key)
        if await self.redis.get(name) == job_id:
            await self.redis.delete(name)

    async def job_fields(self, job_id: str) -> dict[str, str] | None:
        fields = as_fields(await self.redis.hgetall(job_key(job_id)))
        return fields if "spec" in fields else None

    async def result(self, job_id: str) -> JobResult | None:
        fields = await self.job_fields(job_id)
        return result_from_hash(fields, self.sealer) if fields else None

    async def events(self, job_id: str, after: str = "0-0", block_ms: int = 10000) -> AsyncIterator[Event]:
        """Every event after `after`, waiting for new ones, until the result event (then it stops)."""
        last = after
        while True:
            state = await self.redis.hget(job_key(job_id), "state")
            if state is None:
                return  # unknown or expired
            finished = JobState(state) in TERMINAL_STATES
            # A finished job's events are all there: read what is left without waiting, then stop.
            reply = await self.redis.xread({events_key(job_id): last}, block=None if finished else block_ms,
                                           count=200)  # fmt: skip
            if not reply:
                if finished:
                    return
                yield "", "keepalive", None
                continue
            for entry_id, raw in reply[0][1]:
                last = entry_id
                fields = as_fields(raw)
                yield entry_id, fields["type"], event_data(job_id, fields, self.sealer)
                if fields["type"] == "result":
                    return

    async def results(self, job_ids: list[str]) -> list[JobResult]:
        """Many jobs in one round trip (a pipeline), in order; unknown or expired ones are left out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(job_key(job_id))
            replies = await pipe.execute()
        hashes = [as_fields(raw) for raw in replies]
        return [result_from_hash(fields, self.sealer) for fields in hashes if "spec" in fields]

    async def wait(self, job_id: str, timeout_s: float) -> JobResult | None:
        """Block until the job finishes; None on timeout."""

        async def until_result() -> JobResult | None:
            async for _, kind, data in self.events(job_id):
                if kind == "result" and data is not None:
                    return JobResult.model_validate(data)
            return await self.result(job_id)

        try:
            return await asyncio.wait_for(until_result(), timeout_s)
        except TimeoutError:
            return None

    async def cancel(self, job_id: str) -> JobState | None:
        """Mark a queued or running job cancelled; the worker kills its sandbox. None if unknown."""
        fields = await self.job_fields(job_id)
        if fields is None:
            return None
        state = JobState(fields["state"])
        if state in TERMINAL_STATES:
            return state
        if state == JobState.QUEUED:
            result = result_from_hash(fields, self.sealer)
            result.state, result.message = JobState.CANCELLED, "cancelled before it started"
            sealed = seal_result(result, self.sealer)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(job_key(job_id), mapping={"state": JobState.CANCELLED.value, "finished_at": now_iso(),
                                                    "result": sealed})  # fmt: skip
                pipe.xadd(events_key(job_id), event("state", {"state": JobState.CANCELLED.value}))
                pipe.xadd(events_key(job_id), result_event(sealed))
                if fields.get("queue"):
                    pipe.srem(queued_key(fields["queue"]), job_id)
                for key in retention_keys(fields):
                    pipe.expire(key, self.settings.result_retention_s)
                jobstats.record(pipe, jobstats.sample_of(result))  # it ends here: no worker will count it
                await pipe.execute()
            if fields.get("batch"):
                await self.redis.eval(BATCH_MEMBER_FINISHED_LUA, 1, batch_key(fields["batch"]),
                                      self.settings.result_retention_s, job_id)  # fmt: skip
        await self.redis.publish(CANCEL_CHANNEL, job_id)
        return JobState.CANCELLED

    async def wait_batch(self, batch_id: str, job_ids: list[str], timeout_s: float,
                         gone: Callable[[], Awaitable[bool]] | None = None) -> bool:  # fmt: skip
        """Wait until every job of the batch has finished; False after `timeout_s` (or once `gone()` says the
        client left, asked every BATCH_SCAN_S).

        Cheap while it waits: one HGET of the batch's `remaining` count (every finished member decrements it:
        worker.finish, `cancel`) every BATCH_POLL_S. The members' own states decide, read in one pipeline (only
        those not yet seen finished) when the count reaches 0 and every BATCH_SCAN_S anyway: the count is a
        hint. A member finished twice (a redelivered job) counts twice, and a batch stored before the count
        existed, or whose hash expired, has none; once it has misled, only the scans are used. A member whose
        hash is gone (expired) counts as finished: the answer is what is known.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        next_scan, trust_count, unfinished = loop.time(), True, list(job_ids)
        while True:
            now = loop.time()
            count_says_done = trust_count and int(await self.redis.hget(batch_key(batch_id), "remaining") or 0) <= 0
            if count_says_done or now >= next_scan:
                unfinished = await self._unfinished(unfinished)
                if not unfinished:
                    return True
                trust_count = trust_count and not count_says_done
                next_scan = now + BATCH_SCAN_S
                if gone is not None and await gone():
                    return False
            if now >= deadline:
                return False
            await asyncio.sleep(min(BATCH_POLL_S if trust_count else BATCH_SCAN_S, max(deadline - now, 0.0)))

    async def _unfinished(self, job_ids: list[str]) -> list[str]:
        """The jobs still queued or running (one pipeline of HGETs); unknown or expired ones count as finished."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(job_key(job_id), "state")
            states = await pipe.execute()
        return [j for j, s in zip(job_ids, states, strict=True) if s is not None and JobState(s) not in TERMINAL_STATES]

    async def batch_jobs(self, batch_id: str) -> list[str] | None:
        raw = await self.redis.hget(batch_key(batch_id), "jobs")
        return json.loads(raw) if raw else None

    async def workers(self) -> list[WorkerInfo]:
        names = sorted(str(n) for n in await self.redis.smembers(WORKERS))
        if not names:
            return []
        values = await self.redis.mget([worker_key(n) for n in names])
        gone = [n for n, v in zip(names, values, strict=True) if v is None]
        if gone:
            await self.redis.srem(WORKERS, *gone)
        return [WorkerInfo.model_validate_json(v) for v in values if v is not None]

    async def backlog(self, queues: list[str]) -> dict[str, int]:
        """Jobs waiting per language queue: accepted, not started, not cancelled. Counted in the job store, not
        the broker: a broker message may carry a bundle of a batch's jobs (`dispatch.bundle_size`)."""
        if not queues:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.scard(queued_key(queue))
            counts = await pipe.execute()
        return dict(zip(queues, (int(c) for c in counts), strict=True))

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except aioredis.RedisError:
            return False
