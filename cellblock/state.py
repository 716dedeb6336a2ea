"""Every Redis key and payload of the job store, in one place. Celery only dispatches a job id; the job's
spec, state, live events and result live here, where the API reads them.

Keys (``{id}`` is a 32-hex job id, ``{name}`` a worker name)::

    cb:job:{id}               hash   spec (sealed JobSpec), language, queue, state, created_at, started_at,
                                     finished_at, worker, attempts, batch, idempotency_key, request_id,
                                     result (sealed JobResult, once finished)
    cb:job:{id}:events        stream type ∈ state | step | stdout | stderr | result; data = JSON, sealed for
                                     stdout, stderr and result (SEALED_EVENTS)
    cb:job:{id}:input         stream an interactive job's live input, written by the API (Piston's WebSocket), read
                                     by the worker running it: data = sealed JSON {"kind": stdin | eof | signal,
                                     "data": text} (`input_entry`); expires with the job
    cb:idem:{key}             string the job id an idempotency key maps to
    cb:queued:{queue}         set    ids of the queue's jobs that wait for a worker: added when the API stores
                                     them, removed when a worker starts or ends one or it is cancelled; its
                                     size is the queue's backlog (a broker message may carry several jobs)
    cb:batch:{id}             hash   created_at, remaining (jobs not finished), jobs (JSON list of job ids)
    cb:cluster:keycheck       string a token sealed with the cluster key; a host whose keys cannot open it
                                     refuses to start (`check_cluster_key`)
    cb:workers                set    names of workers that have announced themselves
    cb:worker:{name}          string JSON WorkerInfo, expiring after worker_ttl_s without a heartbeat
    cb:worker:{name}:running  set    job ids that worker is running now
    cb:cancel                 pub/sub channel: job ids to cancel
    cb:metrics                hash   job metrics of the whole cluster, written with each result
                                     (`cellblock.observability.jobstats`): field = JSON [metric, labels, part]
    cb:webhooks               zset   job ids whose callback is due, scored by the time of the next attempt
    cb:webhooks:attempts      hash   job id → delivery attempts made
    cb:judge0:submissions     zset   job ids submitted through the Judge0 API, scored by submission time (unix s),
                                     for its paginated listing; members whose job has expired are dropped as
                                     the listing meets them. Such a job's hash also has the field ``judge0``:
                                     the sealed Judge0Meta (`cellblock.api.judge0.render`)
    cb:apikeys                set    ids of every API key ever created (revoked ones stay, marked)
    cb:apikey:{key}           hash   record (JSON ApiKey: name, scopes, limits, sha256 of the key, dates),
                                     revoked_at, last_used_at; never the key itself (`cellblock.auth`)
    cb:apikey:{key}:running   zset   job ids the key has queued or running, scored by submission time
                                     (unix s); the worker removes a job when it finishes
    cb:apikey:{key}:day:{d}   string jobs the key submitted on UTC day d (YYYYMMDD); expires after 2 days
    cb:apikey:{key}:rate      hash   token bucket of the key's request rate: tokens, ts (unix s)

"Sealed" is a Fernet token of the cluster keys bound to the job and its purpose (`Sealer.seal_for`): a
reader of the store learns nothing of a program, its input or its output, and a writer cannot make a worker
run a spec or a client believe a result that no holder of the cluster key wrote. State, times and worker
names stay in clear: the scheduler and operators need them, and they tell nothing of the program.

A job submitted with an API key carries its id in the job hash field ``api_key_id``. ``{key}`` is a 16-hex
key id (the public part of the key, never the secret).

Nothing expires while a job waits or runs; its keys, its batch's and its idempotency key's expire
`result_retention_s` after it finishes (`retention_keys`). Payloads are JSON validated by the
models in `cellblock.models` and here; never pickle.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from cellblock.models import JobResult, JobSpec, JobState, Verdict
from cellblock.sealing import Sealer, SealError

log = logging.getLogger(__name__)

CANCEL_CHANNEL = "cb:cancel"
# A batch member finished: count it; when none is left, the batch's retention clock starts. Atomic.
# KEYS[1] the batch hash, ARGV[1] the retention (s), ARGV[2] the job id. Once per job: a job can be finished twice
# (cancelled while queued in the API as a worker takes it; redelivered), so the hash remembers who was counted.
BATCH_MEMBER_FINISHED_LUA = """
if redis.call('HSETNX', KEYS[1], 'finished:' .. ARGV[2], 1) == 0 then
  return tonumber(redis.call('HGET', KEYS[1], 'remaining') or 0)
end
local left = redis.call('HINCRBY', KEYS[1], 'remaining', -1)
if left <= 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return left
"""
# A worker starts a job, in one round trip: count the delivery as an attempt and, unless that is one too many,
# mark it running (hash, state event, the worker's running set, out of its queue's backlog). Atomic, so a job
# cancelled while its message waited (its state already terminal) is never marked running again.
# KEYS: job hash, its events, the worker's running set, the queue's backlog set (`queued_key`).
# ARGV: max attempts, started_at, worker name, job id, state event data. Returns the attempt number, or -1 for a
# job not in the store (expired, never stored), -2 for a finished or cancelled one (neither counts as an attempt).
START_JOB_LUA = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state == 'done' or state == 'failed' or state == 'cancelled' then return -2 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(ARGV[1]) then return attempts end
redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[2], 'worker', ARGV[3])
redis.call('XADD', KEYS[2], '*', 'type', 'state', 'data', ARGV[5])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('SREM', KEYS[4], ARGV[4])
return attempts
"""
WEBHOOK_QUEUE = "cb:webhooks"  # sorted set: job id → when its next delivery attempt is due
WEBHOOK_ATTEMPTS = "cb:webhooks:attempts"  # hash: job id → attempts made
WORKERS = "cb:workers"
JUDGE0_SUBMISSIONS = "cb:judge0:submissions"  # sorted set: Judge0 API job ids by submission time
JUDGE0_FIELD = "judge0"  # job hash field: the sealed Judge0Meta of a job submitted through the Judge0 API
API_KEYS = "cb:apikeys"
JOB_API_KEY_FIELD = "api_key_id"  # job hash field: the id of the API key that submitted the job
EVENT_STREAM_MAXLEN = 10000
TERMINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
SEALED_EVENTS = frozenset({"stdout", "stderr", "result"})  # event types whose data is the program's or its result
CLUSTER_KEY_CHECK = "cb:cluster:keycheck"  # string: a token every host of the cluster must open (`check_cluster_key`)
METRICS_KEY = "cb:metrics"  # hash: the cluster's job metrics (cellblock.observability.jobstats)
REQUEST_ID_FIELD = "request_id"  # job hash field: the API request that submitted the job, for the logs (clear)


def job_key(job_id: str) -> str:
    return f"cb:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"cb:job:{job_id}:events"


def input_key(job_id: str) -> str:
    return f"cb:job:{job_id}:input"


INPUT_KINDS = ("stdin", "eof", "signal")


def input_entry(job_id: str, kind: str, data: str, sealer: Sealer) -> dict[Any, Any]:
    """A stream entry of an interactive job's input, sealed for that job: no other job opens it, and nobody
    without the cluster key can feed a program or signal it."""
    assert kind in INPUT_KINDS, kind
    payload = json.dumps({"kind": kind, "data": data}, separators=(",", ":")).encode()
    return {"data": sealer.seal_for(job_id, "input", payload)}


def open_input(job_id: str, fields: dict[str, str], sealer: Sealer) -> tuple[str, str] | None:
    """(kind, data) of an input entry; None (logged) when it was not sealed for this job or is malformed."""
    try:
        item = json.loads(sealer.open_for(job_id, "input", fields.get("data", "")))
    except (SealError, ValueError) as exc:
        log.error("job %s: an input entry failed verification: %s", job_id, getattr(exc, "message", exc))
        return None
    if not isinstance(item, dict) or item.get("kind") not in INPUT_KINDS or not isinstance(item.get("data"), str):
        return None
    return str(item["kind"]), str(item["data"])


def idempotency_key(key: str) -> str:
    return f"cb:idem:{key}"


def queued_key(queue: str) -> str:
    return f"cb:queued:{queue}"


def batch_key(batch_id: str) -> str:
    return f"cb:batch:{batch_id}"


def worker_key(name: str) -> str:
    return f"cb:worker:{name}"


def running_key(name: str) -> str:
    return f"cb:worker:{name}:running"


def api_key_key(key_id: str) -> str:
    return f"cb:apikey:{key_id}"


def api_key_running_key(key_id: str) -> str:
    return f"cb:apikey:{key_id}:running"


def api_key_day_key(key_id: str, day: str) -> str:
    return f"cb:apikey:{key_id}:day:{day}"


def api_key_rate_key(key_id: str) -> str:
    return f"cb:apikey:{key_id}:rate"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class WorkerInfo(BaseModel):
    name: str = Field(description="Celery node name, unique per worker.", examples=["cellblock-host1-1234"])
    host: str = Field(description="The worker's host name.", examples=["host1"])
    slots: int = Field(description="Sandbox slots (jobs it runs at once).", examples=[8])
    busy: int = Field(0, description="Slots running a job now.", examples=[3])
    languages: list[str] = Field(description="Languages whose self-test passed here.", examples=[["c", "python3"]])
    language_versions: dict[str, str] = Field({}, description="Toolchain versions.", examples=[{"python3": "3.11.2"}])
    queues: list[str] = Field(description="The queues it consumes.", examples=[["lang.c", "lang.python3"]])
    version: str = Field(description="Cellblock's version on that worker.", examples=["0.1.0"])
    features: list[str] = Field(
        [],
        description="Message kinds it takes beyond one job per message: 'bundles' (a batch's jobs in one message). "
        "The API sends bundles of a language only while every live worker running it has this.",
        examples=[["bundles"]],
    )
    started_at: str = Field(
        description="When the worker started (UTC, ISO 8601).", examples=["2026-01-01T12:00:00+00:00"]
    )
    last_seen: str = Field(description="Its last heartbeat (UTC, ISO 8601).", examples=["2026-01-01T12:05:00+00:00"])


def new_job_fields(job_id: str, spec: JobSpec, queue: str, sealer: Sealer,
                   batch_id: str | None = None) -> dict[str, str]:  # fmt: skip
    """The hash a job starts with, written before the client hears 'accepted'."""
    fields = {
        "id": job_id,
        "spec": sealer.seal_for(job_id, "spec", spec.model_dump_json().encode()),
        "language": spec.language,
        "queue": queue,
        "state": JobState.QUEUED.value,
        "created_at": now_iso(),
        "attempts": "0",
    }
    if batch_id:
        fields["batch"] = batch_id
    return fields


def open_spec(fields: dict[str, str], sealer: Sealer) -> JobSpec:
    """The job's spec; SealError if no current cluster key sealed it for this job."""
    return JobSpec.model_validate_json(sealer.open_for(fields["id"], "spec", fields["spec"]))


def seal_result(result: JobResult, sealer: Sealer) -> str:
    """The result's token: stored in the job hash and, the same token, as the data of its `result_event`."""
    return sealer.seal_for(result.id, "result", result.model_dump_json().encode())


def result_event(sealed_result: str) -> dict[Any, Any]:
    """The stream entry announcing a job's result (its `seal_result` token: sealed once, stored twice)."""
    return {"type": "result", "data": sealed_result}


def event(kind: str, data: Any) -> dict[Any, Any]:
    """Stream entry fields of a clear event (typed loosely: redis-py's xadd wants its own union types)."""
    assert kind not in SEALED_EVENTS, kind
    return {"type": kind, "data": json.dumps(data, separators=(",", ":"))}


def sealed_event(job_id: str, kind: str, json_text: str, sealer: Sealer) -> dict[Any, Any]:
    """Stream entry fields of an event whose data (JSON text) is the program's output or its result."""
    return {"type": kind, "data": sealer.seal_for(job_id, kind, json_text.encode())}


def event_data(job_id: str, fields: dict[str, str], sealer: Sealer) -> Any:
    """The data of a stream entry, opened when sealed. A forged sealed event reads as None (and is logged)."""
    kind, raw = fields["type"], fields["data"]
    if kind not in SEALED_EVENTS:
        return json.loads(raw)
    try:
        return json.loads(sealer.open_for(job_id, kind, raw))
    except SealError as exc:
        log.error("job %s: a %s event failed verification: %s", job_id, kind, exc.message)
        return None


def retention_keys(fields: dict[str, str]) -> list[str]:
    """Keys whose retention clock starts when this job finishes: its own and its idempotency key's.

    (A batch's clock starts when its last job finishes: BATCH_MEMBER_FINISHED_LUA.)"""
    keys = [job_key(fields["id"]), events_key(fields["id"]), input_key(fields["id"])]
    if fields.get("idempotency_key"):
        keys.append(idempotency_key(fields["idempotency_key"]))
    return keys


def as_fields(raw: Any) -> dict[str, str]:
    """A hash read with decode_responses=True: str keys and values (redis-py types it as bytes | str)."""
    return {str(k): str(v) for k, v in raw.items()}


def result_from_hash(fields: dict[str, str], sealer: Sealer) -> JobResult:
    """The JobResult of a job hash: the stored result once finished, else what is known so far.

    A stored result that no current cluster key sealed for this job (forged in the store, or sealed with a
    retired key) is reported as a failed job saying so, never passed on as if a worker had written it."""
    if fields.get("result"):
        try:
            return JobResult.model_validate_json(sealer.open_for(fields["id"], "result", fields["result"]))
        except SealError as exc:
            log.error("job %s: its stored result failed verification: %s", fields["id"], exc.message)
            unverified = _known_so_far(fields)
            unverified.state, unverified.verdict = JobState.FAILED, Verdict.INTERNAL_ERROR
            unverified.message = "the stored result failed verification: not sealed with a current cluster key"
            return unverified
    return _known_so_far(fields)


def _known_so_far(fields: dict[str, str]) -> JobResult:
    return JobResult(
        id=fields["id"],
        state=JobState(fields.get("state", JobState.QUEUED.value)),
        language=fields.get("language", ""),
        created_at=datetime.fromisoformat(fields["created_at"]),
        started_at=datetime.fromisoformat(fields["started_at"]) if fields.get("started_at") else None,
        worker=fields.get("worker") or None,
        message=fields.get("message") or None,
    )


KEY_CHECK_TEXT = b"cellblock cluster key check"


def check_cluster_key(client: Any, sealer: Sealer) -> None:
    """Refuse to start a host whose cluster keys differ from the cluster's, before it takes or seals any job.

    The first host leaves a token sealed with its first key; every host opens it at start. A host that cannot
    (a wrong or missing key) raises SealError naming the setting, instead of rejecting every job it is sent or
    sealing jobs nobody else can open. A host whose first key is newer (rotation) re-seals the token with it,
    so hosts still lacking the new key are refused from then on. `client`: a sync redis.Redis.
    """
    token = client.get(CLUSTER_KEY_CHECK)
    if token is None:
        client.set(CLUSTER_KEY_CHECK, sealer.seal(KEY_CHECK_TEXT), nx=True)
        token = client.get(CLUSTER_KEY_CHECK)
    token = token.decode() if isinstance(token, bytes) else str(token)
    try:
        sealer.open(token)
    except SealError as exc:
        raise SealError(
            "this host's cluster keys cannot open what the cluster seals: CELLBLOCK_CLUSTER_KEYS must list the "
            "cluster's current key (the same list on every host; see 'Sealed job traffic' in the README)",
            field="cluster_keys",
        ) from exc
    if not sealer.sealed_with_first_key(token):
        client.set(CLUSTER_KEY_CHECK, sealer.seal(KEY_CHECK_TEXT))
