"""Deliver finished jobs to their callback_url: POST the JobResult (a Judge0 submission: PUT Judge0's body),
retried with exponential backoff.

Theory of operation. A finishing worker adds the job id to the sorted set ``cb:webhooks`` scored by when
the next attempt is due (now). `cellblock webhooks` runs an asyncio loop that atomically *claims* due
entries (a Lua script moves their score forward by a lease), POSTs each concurrently, and then removes the
entry (delivered, or out of attempts) or reschedules it (score = now + backoff). A sender that dies mid-POST
leaves its entries to come due again when their lease runs out, so delivery is at least once, and any
number of senders may run. Nothing here holds a sandbox slot, and a receiver that never answers costs one
coroutine, not a thread: thousands of dead receivers don't delay a live one.

Why not Celery retries: a retry with a countdown sits unacknowledged in a worker; on Redis it is delivered
again once the visibility timeout passes, and a thread sleeps through every backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis

from cellblock.config import Settings
from cellblock.logs import JOB_ID, REQUEST_ID
from cellblock.models import JobResult
from cellblock.redis_url import redis_kwargs
from cellblock.sealing import Sealer, SealError
from cellblock.state import (
    JUDGE0_FIELD,
    REQUEST_ID_FIELD,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_QUEUE,
    as_fields,
    job_key,
    open_spec,
    result_from_hash,
)

log = logging.getLogger(__name__)

CLAIM_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
return due
"""
CONCURRENCY = 256
FIRST_BACKOFF_S = 1.0


def judge0_callback(result: JobResult, sealed_meta: str, sealer: Sealer) -> str:
    """Judge0's callback body; the renderer is the Judge0 API's (pure code, no web framework in it)."""
    from cellblock.api.judge0.render import Judge0Meta, callback_body

    meta = Judge0Meta.model_validate_json(sealer.open_for(result.id, JUDGE0_FIELD, sealed_meta))
    return json.dumps(callback_body(result, meta))


def enqueue_webhook(client: redis.Redis, job_id: str) -> None:
    """Called by the worker when a job with a callback_url finishes."""
    client.zadd(WEBHOOK_QUEUE, {job_id: time.time()})


class Sender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sealer = Sealer.from_settings(settings)
        self.redis: Any = aioredis.Redis(
            **redis_kwargs(settings.job_store_url()), decode_responses=True, socket_timeout=30
        )
        self.http = httpx.AsyncClient(timeout=settings.webhook_timeout_s)
        self.gate = asyncio.Semaphore(CONCURRENCY)
        self.claim = self.redis.register_script(CLAIM_LUA)
        self.tasks: set[asyncio.Task[None]] = set()

    async def deliver(self, job_id: str) -> bool:
        fields = as_fields(await self.redis.hgetall(job_key(job_id)))
        if "spec" not in fields:
            return True  # expired: nothing left to deliver
        JOB_ID.set(job_id)  # this attempt's task (its own context): its lines name the job and its request
        REQUEST_ID.set(fields.get(REQUEST_ID_FIELD))
        try:
            url = open_spec(fields, self.sealer).callback_url
        except SealError as exc:  # a forged spec: its callback URL is nobody's to call
            log.error("job %s: no webhook, its stored spec failed verification: %s", job_id, exc.message)
            return True
        if not url:
            return True
        result = result_from_hash(fields, self.sealer)
        method, body = "POST", result.model_dump_json()
        if fields.get(JUDGE0_FIELD):  # a Judge0 submission: Judge0's PUT of its default fields, in base64
            try:
                method, body = "PUT", judge0_callback(result, fields[JUDGE0_FIELD], self.sealer)
            except SealError as exc:
                log.error("job %s: no webhook, its Judge0 record failed verification: %s", job_id, exc.message)
                return True
        try:
            response = await self.http.request(method, url, content=body, headers={"content-type": "application/json"})
            if response.is_success:
                log.info("job %s: webhook delivered (HTTP %d)", job_id, response.status_code)
                return True
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        log.warning("job %s: webhook attempt failed (%s)", job_id, problem)
        return False

    async def attempt(self, job_id: str) -> None:
        async with self.gate:
            delivered = await self.deliver(job_id)
        attempts = int(await self.redis.hincrby(WEBHOOK_ATTEMPTS, job_id, 1))
        if delivered or attempts >= self.settings.webhook_attempts:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(WEBHOOK_QUEUE, job_id)
                pipe.hdel(WEBHOOK_ATTEMPTS, job_id)
                await pipe.execute()
            if not delivered:
                log.error("job %s: webhook given up after %d attempts", job_id, attempts)
            return
        backoff = FIRST_BACKOFF_S * 2 ** (attempts - 1)
        await self.redis.zadd(WEBHOOK_QUEUE, {job_id: time.time() + backoff})

    async def run(self, stop: asyncio.Event) -> None:
        lease = self.settings.webhook_timeout_s + 30
        while not stop.is_set():
            now = time.time()
            try:
                due = await self.claim(keys=[WEBHOOK_QUEUE], args=[now, now + lease, 100])
            except aioredis.RedisError as exc:
                log.warning("webhooks: store unavailable: %s", exc)
                due = []
            for job_id in due:
                task = asyncio.create_task(self.attempt(str(job_id)))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            if not due:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)
        await self.http.aclose()
        await self.redis.aclose()


def run_sender(settings: Settings) -> int:
    """`cellblock webhooks`: deliver callbacks until SIGTERM/SIGINT."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Sender(settings).run(stop)

    asyncio.run(main())
    return 0
