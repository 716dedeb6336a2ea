"""The Celery side: the execute task, its live events, cancellation and its lease (`workerhost.py` starts it).

Each Celery pool process is one sandbox slot; it runs the jobs it is given through the engine and writes
their state, events and result to the job store.

Delivery is at least once (late acks, requeue on a lost worker), so `run_job` is idempotent per job id: a job
already finished or cancelled is skipped, and each delivery bumps an attempt counter; past `max_attempts`
the job fails with a clear message instead of killing workers forever (a poison pill).
"""

from __future__ import annotations

import base64
import codecs
import json
import logging
import os
import socket
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import redis
from celery.exceptions import Reject
from celery.signals import setup_logging, worker_process_shutdown

from cellblock.config import Settings
from cellblock.dispatch import (
    BUNDLE_HANDBACK_S,
    EXECUTE_BUNDLE_TASK,
    EXECUTE_TASK,
    Dispatcher,
    broker_redis_url,
    language_queue,
    make_celery,
)
from cellblock.engine import Engine
from cellblock.errors import CellblockError
from cellblock.languages.registry import Registry
from cellblock.livefeed import LiveFeed
from cellblock.logs import configure as configure_logging
from cellblock.logs import job_context
from cellblock.models import JobResult, JobState, StepResult, Verdict
from cellblock.observability import jobstats
from cellblock.redis_url import redis_kwargs
from cellblock.sandbox.host import SandboxHost
from cellblock.sealing import Sealer, SealError
from cellblock.state import (
    BATCH_MEMBER_FINISHED_LUA,
    CANCEL_CHANNEL,
    EVENT_STREAM_MAXLEN,
    JOB_API_KEY_FIELD,
    REQUEST_ID_FIELD,
    SEALED_EVENTS,
    START_JOB_LUA,
    TERMINAL_STATES,
    api_key_running_key,
    as_fields,
    batch_key,
    event,
    events_key,
    job_key,
    now_iso,
    open_spec,
    queued_key,
    result_event,
    result_from_hash,
    retention_keys,
    running_key,
    seal_result,
    sealed_event,
)
from cellblock.toolchains import fingerprint
from cellblock.webhooks import enqueue_webhook

log = logging.getLogger(__name__)


class Runtime:
    """Per worker process: one Redis client, one engine, one cancel listener. Created after fork."""

    def __init__(self, settings: Settings, name: str, sealer: Sealer) -> None:
        self.settings = settings
        self.name = name
        self.sealer = sealer
        self.redis = redis.Redis(**redis_kwargs(settings.job_store_url()), decode_responses=True, socket_timeout=30)
        self.engine = Engine(settings, Registry.load(settings.languages_dir), SandboxHost(settings))
        self.current: str | None = None
        self.cancelled: set[str] = set()
        self.lease = Lease(settings)
        self.lease.start()
        self._dispatcher: Dispatcher | None = None
        threading.Thread(target=self._listen_for_cancels, daemon=True, name="cancel-listener").start()

    def dispatcher(self) -> Dispatcher:
        """A publisher, for handing back the rest of a bundle (made on first use: most processes never do)."""
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(self.settings)
        return self._dispatcher

    def _listen_for_cancels(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
                pubsub.subscribe(CANCEL_CHANNEL)
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message" and message["data"] == self.current:
                        self.cancelled.add(str(message["data"]))
            except redis.RedisError:
                time.sleep(1)


class Lease(threading.Thread):
    """Keeps the running job's broker message from being restored to the queue while we are alive.

    kombu's Redis transport restores unacked messages delivered more than visibility_timeout ago; it scores
    each by its delivery time in a sorted set. Renewing that score (ZADD XX: only if still unacked) every
    third of the timeout turns the timeout into a lease: it only runs out when this process is gone.

    Redis only (a no-op thread otherwise): RabbitMQ needs no lease, since it ties each unacked delivery to the
    consumer's connection and requeues it when that closes (the process died) or stops answering heartbeats
    (the host vanished); a live job is never redelivered, however long it runs (up to consumer_timeout).
    """

    UNACKED_INDEX = "unacked_index"  # kombu's Channel.unacked_index_key default

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True, name="lease")
        url = broker_redis_url(settings)
        self.client = redis.Redis(**redis_kwargs(url), socket_timeout=10) if url else None
        self.interval = settings.visibility_timeout_s / 3
        self.tag: str | None = None

    def run(self) -> None:
        while self.client is not None:
            tag = self.tag
            if tag is not None:
                try:
                    self.client.zadd(self.UNACKED_INDEX, {tag: time.time()}, xx=True)
                except redis.RedisError as exc:
                    log.warning("lease renewal failed: %s", exc)
            time.sleep(self.interval)


class StreamObserver:
    """Turns a job's steps and output into events on its Redis stream, as they happen.

    A step's "finished" event waits for the next write (the next step's start, output, or the job's result in
    `finish`), which follows within the engine's own bookkeeping: one round trip to the store less per step."""

    def __init__(self, runtime: Runtime, job_id: str) -> None:
        self.runtime = runtime
        self.job_id = job_id
        self.label = ""
        self.decoders: dict[str, codecs.IncrementalDecoder] = {}
        self.step_began = 0.0
        self.overheads: list[tuple[str, float]] = []  # (compile | run, seconds) for the metrics (jobstats)
        self.pending: list[dict[Any, Any]] = []  # stream entries not written yet, oldest first

    def _emit(self, kind: str, data: Any, *, later: bool = False) -> None:
        if kind in SEALED_EVENTS:
            entry = sealed_event(self.job_id, kind, json.dumps(data, separators=(",", ":")), self.runtime.sealer)
        else:
            entry = event(kind, data)
        self.pending.append(entry)
        if later:
            return
        entries, self.pending = self.pending, []
        try:
            with self.runtime.redis.pipeline(transaction=False) as pipe:
                for fields in entries:
                    pipe.xadd(events_key(self.job_id), fields, maxlen=EVENT_STREAM_MAXLEN, approximate=True)
                pipe.execute()
        except redis.RedisError as exc:  # live events are best effort; the result is what must not be lost
            log.warning("job %s: event not published: %s", self.job_id, exc)

    def step_started(self, label: str) -> None:
        self.label = label
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")() for name in ("stdout", "stderr")}
        self._emit("step", {"step": label, "phase": "started"})
        self.step_began = time.monotonic()  # after our own event: the overhead is the sandbox's, not the store's

    def output(self, stream: str, data: bytes) -> None:
        try:
            text, encoding = self.decoders[stream].decode(data), "utf8"
        except UnicodeDecodeError:
            self.decoders[stream] = codecs.getincrementaldecoder("utf-8")()
            text, encoding = base64.b64encode(data).decode("ascii"), "base64"
        if text:
            self._emit(stream, {"step": self.label, "data": text, "encoding": encoding})

    def step_finished(self, label: str, step: StepResult) -> None:
        # The sandbox's overhead: the step's whole time in the slot (namespaces, cgroups, launch, cleanup, reading
        # the output) minus the program's own wall time, which the supervisor clocks from release to exit.
        overhead = time.monotonic() - self.step_began - step.wall_time_s
        self.overheads.append(("compile" if label == "compile" else "run", overhead))
        log.debug("step %s: %s, cpu %.3f s, wall %.3f s, memory %d KiB, sandbox overhead %.4f s", label,
                  step.outcome.value, step.cpu_time_s, step.wall_time_s, step.memory_kib, overhead)  # fmt: skip
        self._emit("step", {"step": label, "phase": "finished", "outcome": step.outcome.value}, later=True)

    def cancelled(self) -> bool:
        return self.job_id in self.runtime.cancelled


def finish(runtime: Runtime, result: JobResult, *, notify: str | None, fields: dict[str, str],
           observer: StreamObserver | None = None) -> None:  # fmt: skip
    """Store the result, count it in the metrics and end the event stream (after the observer's events not
    written yet) in one transaction; then the retention clock starts."""
    r, ttl = runtime.redis, runtime.settings.result_retention_s
    sealed = seal_result(result, runtime.sealer)
    with r.pipeline(transaction=True) as pipe:
        pipe.hset(job_key(result.id), mapping={
            "state": result.state.value, "result": sealed,
            "finished_at": (result.finished_at.isoformat() if result.finished_at else now_iso()),
        })  # fmt: skip
        for entry in observer.pending if observer else []:
            pipe.xadd(events_key(result.id), entry, maxlen=EVENT_STREAM_MAXLEN, approximate=True)
        pipe.xadd(events_key(result.id), event("state", {"state": result.state.value}))
        pipe.xadd(events_key(result.id), result_event(sealed))
        for key in retention_keys(fields):
            pipe.expire(key, ttl)
        if fields.get("batch"):  # the batch's `remaining` count, which batch long-polls watch (and its retention)
            pipe.eval(BATCH_MEMBER_FINISHED_LUA, 1, batch_key(fields["batch"]), ttl, result.id)
        pipe.srem(running_key(runtime.name), result.id)
        if fields.get("queue"):  # ended without starting (refused, gave up): out of the backlog too
            pipe.srem(queued_key(fields["queue"]), result.id)
        if fields.get(JOB_API_KEY_FIELD):  # the job counted in its API key's max_running (cellblock.quotas)
            pipe.zrem(api_key_running_key(fields[JOB_API_KEY_FIELD]), result.id)
        overheads = observer.overheads if observer else None
        jobstats.record(pipe, replace(jobstats.sample_of(result, overheads), host=socket.gethostname()))
        pipe.execute()
    log.info("job %s finished: %s, %s", result.id, result.state.value, result.verdict.value if result.verdict else "-")
    if notify:
        enqueue_webhook(r, result.id)


def _failed(runtime: Runtime, fields: dict[str, str], message: str) -> JobResult:
    result = result_from_hash(fields, runtime.sealer)
    result.state, result.verdict, result.message = JobState.FAILED, Verdict.INTERNAL_ERROR, message
    result.worker, result.finished_at = runtime.name, datetime.now(UTC)
    return result


class ToolchainMissing(Exception):
    """The job's language lost its toolchain on this host since the last check: hand the job back."""

    def __init__(self, language: str, job_id: str) -> None:
        super().__init__(f"the {language} toolchain is gone from this host")
        self.language = language
        self.job_id = job_id


def _check_toolchain(runtime: Runtime, language: str, job_id: str) -> None:
    """A stat, before the job counts as an attempt: a vanished toolchain must not turn into the user's verdict."""
    try:
        lang = runtime.engine.registry.get(language)
    except CellblockError:
        return  # the engine reports an unknown language in the job's result
    if fingerprint(lang) is None:
        raise ToolchainMissing(lang.name, job_id)


def run_job(runtime: Runtime, job_id: str, fields: dict[str, str] | None = None) -> None:
    """Run one job: `fields` is its hash when the caller read it already (a bundle reads all its jobs' at once;
    only the immutable fields are used from it: the state is checked again atomically as the job starts)."""
    if fields is None:
        fields = as_fields(runtime.redis.hgetall(job_key(job_id)))
    with job_context(job_id, fields.get(REQUEST_ID_FIELD)):  # every line about this job names its request
        _run_job(runtime, job_id, fields)


def _start(runtime: Runtime, job_id: str, fields: dict[str, str]) -> int:
    """START_JOB_LUA: the attempt number (running now unless over max_attempts), -1 gone, -2 finished."""
    keys = [job_key(job_id), events_key(job_id), running_key(runtime.name), queued_key(fields.get("queue", ""))]
    running = event("state", {"state": JobState.RUNNING.value, "worker": runtime.name})["data"]
    args = [runtime.settings.max_attempts, now_iso(), runtime.name, job_id, running]
    return int(runtime.redis.eval(START_JOB_LUA, len(keys), *keys, *args))  # type: ignore[arg-type,unused-ignore]


def _run_job(runtime: Runtime, job_id: str, fields: dict[str, str]) -> None:
    if "spec" not in fields:
        log.warning("job %s: not in the job store, skipped", job_id)  # expired, or never stored
        return
    if JobState(fields["state"]) in TERMINAL_STATES:
        return  # a second delivery of a finished job, or cancelled while queued: not an attempt
    _check_toolchain(runtime, fields.get("language", ""), job_id)
    try:
        spec = open_spec(fields, runtime.sealer)
    except SealError as exc:  # a spec written into the store by someone without the cluster key: never run it
        runtime.redis.hincrby(job_key(job_id), "attempts", 1)  # a delivery that got this far
        log.error("job %s: refused, its stored spec failed verification: %s", job_id, exc.message)
        message = "refused: the job's stored spec is not sealed with a current cluster key"
        finish(runtime, _failed(runtime, fields, message), notify=None, fields=fields)
        return
    attempts = _start(runtime, job_id, fields)  # deliveries that start the job
    if attempts < 0:
        return  # finished or cancelled since the bundle was read (or gone): not an attempt
    if attempts > runtime.settings.max_attempts:
        message = f"gave up after {attempts - 1} attempts: the worker running this job died each time"
        finish(runtime, _failed(runtime, fields, message), notify=spec.callback_url, fields=fields)
        return
    runtime.current = job_id
    log.debug("job %s started (%s, attempt %d)", job_id, fields.get("language", ""), attempts)
    feed = LiveFeed(runtime.settings, runtime.sealer, job_id) if spec.interactive else None
    observer = StreamObserver(runtime, job_id)
    if feed is not None:
        feed.start()  # stdin and signals from the job's input stream, while it runs (livefeed.py)
    try:
        result = runtime.engine.run(spec, job_id=job_id, observer=observer,
                                    created_at=datetime.fromisoformat(fields["created_at"]),
                                    live_input=feed)  # fmt: skip
    except CellblockError as exc:  # e.g. a language this host lost since the API accepted the job
        result = _failed(runtime, fields, exc.message)
    except Exception:  # our bug: the job still ends, as failed, rather than hang in "running" forever
        log.exception("job %s: unexpected error", job_id)
        result = _failed(runtime, fields, "internal error while running the job")
    finally:
        runtime.current = None
        runtime.cancelled.discard(job_id)
        if feed is not None:
            feed.stop()
    result.worker = runtime.name
    finish(runtime, result, notify=spec.callback_url, fields=fields, observer=observer)


def run_bundle(runtime: Runtime, job_ids: list[str], queue: str) -> None:
    """Run one message's jobs in order. Once the slot has held the message `BUNDLE_HANDBACK_S`, the jobs not yet
    started go back to `queue` as a new message (the queue's tail: other slots may take them) and this one ends.
    So a message takes at most that long plus one job: within Celery's task_time_limit (one job's limit + 30 s).

    A job's failure in our code (e.g. the job store unreachable) hands the rest back too, before it propagates
    (Celery acks a failed task).
    Published before this message is acked: if we die in between, the old message comes again and the jobs
    that finished meanwhile are skipped (`run_job` is idempotent).
    """
    began = time.monotonic()
    hashes: list[dict[str, str] | None] = [None] * len(job_ids)
    if len(job_ids) > 1:  # one round trip for the whole bundle's hashes
        with runtime.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(job_key(job_id))
            hashes = [as_fields(raw) for raw in pipe.execute()]
    for index, job_id in enumerate(job_ids):
        rest = job_ids[index + 1 :]
        try:
            run_job(runtime, job_id, hashes[index])
        except ToolchainMissing:
            raise  # the whole message goes back (Reject): its finished jobs are skipped when it comes again
        except Exception:
            # Celery acks a failed task: the rest must be queued again. (A process that exits, SystemExit, is a
            # lost worker instead: Celery requeues the whole message, so nothing is handed back then.)
            if rest:
                _hand_back(runtime, rest, queue)
            raise
        if rest and time.monotonic() - began >= BUNDLE_HANDBACK_S:
            _hand_back(runtime, rest, queue)
            return


def _hand_back(runtime: Runtime, job_ids: list[str], queue: str) -> None:
    try:
        runtime.dispatcher().publish(job_ids, queue)
    except Exception:  # the broker is gone: the message's own redelivery is all that is left
        log.exception("could not queue %d jobs of a bundle again: %s", len(job_ids), ", ".join(job_ids))
        raise
    log.debug("handed back %d jobs of a bundle to %s", len(job_ids), queue)


_RUNTIME: dict[int, Runtime] = {}


def _runtime(settings: Settings, name: str, sealer: Sealer) -> Runtime:
    """One Runtime per process, created lazily after the prefork fork (threads and sockets don't survive it)."""
    pid = os.getpid()
    if pid not in _RUNTIME:
        _RUNTIME.clear()
        _RUNTIME[pid] = Runtime(settings, name, sealer)
    return _RUNTIME[pid]


def build_app(settings: Settings, languages: list[str], name: str, sealer: Sealer) -> Any:
    """The worker's Celery app. `sealer` is made once, before the fork: every pool process shares the keys."""
    app = make_celery(settings, languages)

    def own_logging(**_: Any) -> None:  # a receiver keeps Celery from installing its handlers (main and pool)
        configure_logging(settings.log_format, settings.log_level)

    setup_logging.connect(own_logging, weak=False)

    def close_warm_slots(**_: Any) -> None:
        # A pool process ends with os._exit (billiard): the host's atexit hook never runs there, and its warm
        # slots' /box mounts would outlive the worker (the next start's sweep would find them).
        runtime = _RUNTIME.get(os.getpid())
        if runtime is not None:
            runtime.engine.host.close_warm()

    worker_process_shutdown.connect(close_warm_slots, weak=False)

    def deliver(task: Any, token: Any, extra: tuple[Any, ...], kwargs: dict[str, Any], bundle: bool) -> None:
        try:
            if extra or kwargs:
                raise SealError("unexpected arguments")
            payload = sealer.open(token).decode()
        except (SealError, UnicodeDecodeError) as exc:
            # Acked (the task returns) and dropped, never run: whoever forged it learns nothing by a retry.
            log.error("rejected message %s: %s", task.request.id, getattr(exc, "message", exc))
            return
        job_ids = payload.split(",") if bundle else [payload]
        queue = (task.request.delivery_info or {}).get("routing_key") or ""
        runtime = _runtime(settings, name, sealer)
        runtime.lease.tag = (task.request.properties or {}).get("delivery_tag")  # kombu Redis: the unacked key
        try:
            run_bundle(runtime, job_ids, queue)
        except ToolchainMissing as exc:  # back to the queue, for a worker that has it; stop taking its jobs here
            others = f" with the {len(job_ids) - 1} other jobs of its message" if len(job_ids) > 1 else ""
            log.error("job %s: %s; job handed back%s, no longer taking %s jobs", exc.job_id, exc, others,
                      exc.language)  # fmt: skip
            task.app.control.cancel_consumer(language_queue(exc.language), destination=[celery_node_name(name)])
            raise Reject(str(exc), requeue=True) from exc
        finally:
            runtime.lease.tag = None

    @app.task(name=EXECUTE_TASK, max_retries=0, bind=True)
    def execute(self: Any, token: Any = None, *extra: Any, **kwargs: Any) -> None:
        deliver(self, token, extra, kwargs, bundle=False)

    @app.task(name=EXECUTE_BUNDLE_TASK, max_retries=0, bind=True)
    def execute_bundle(self: Any, token: Any = None, *extra: Any, **kwargs: Any) -> None:
        deliver(self, token, extra, kwargs, bundle=True)

    return app


def celery_node_name(node: str) -> str:
    """Celery's name for a worker started with --hostname NODE (it adds 'celery@' when NODE has no '@')."""
    return node if "@" in node else f"celery@{node}"
