"""The Python SDK: `Client` (blocking) and `AsyncClient` (asyncio) for a Cellblock server's /v1 API, on httpx.

    from cellblock import Client

    with Client("http://127.0.0.1:8000") as cb:
        result = cb.run("python3", "print(input()[::-1])", stdin="olleh")
        print(result.verdict, result.tests[0].run.stdout)
        batch = cb.batch([{"language": "c", "files": [...], "tests": [...]}, ...])
        frame = batch.to_dataframe()          # one row per job (pandas)

Theory of operation. Every method is one or a few HTTP calls; nothing is validated here that the server
checks (the server is the authority, and a newer server may accept fields this client does not know).

* Errors: every failure is an `ApiError` with the server's ``{"code", "message", "field"}`` and the HTTP
  status; a failure that never got an answer (connection refused, timed out waiting) has ``status=None``.
* 503 (backlog full, broker unavailable) is retried after ``Retry-After`` seconds (capped), a bounded
  number of times. Submissions carry an ``Idempotency-Key`` (generated unless you give one), so a POST
  whose answer was lost on the way back is resent safely: the server names the job it already accepted.
* `stream` reads the job's server-sent events; a dropped connection is resumed with ``Last-Event-ID``,
  so no event is lost or repeated. `wait` follows the same stream until the ``result`` event.
* HTTPS: the server's certificate is verified against ``verify`` — a CA bundle's path, an `ssl.SSLContext`,
  or, by default, the file named by ``CELLBLOCK_CA_FILE`` when that is set, else the usual trust store.
* `batch` submits up to the server's ``max_batch_jobs`` jobs in one request, then `wait_batch` long-polls it
  (``GET /v1/batches/{id}?wait=true``: the server answers when every job has finished, or after at most 60 s,
  and the client asks again) — every 1 s instead with an ``on_progress`` callback, so that it sees progress. A
  server without the long-poll answers at once; the client then polls (the interval grows from 50 ms to 1 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from cellblock.errors import CellblockError, UserError
from cellblock.models import JobResult, JobSpec, JobState, Limits, TestCase, TestResult, Verdict
from cellblock.state import TERMINAL_STATES, WorkerInfo

if TYPE_CHECKING:
    import pandas as pd

    from cellblock.api.schemas import LanguageInfo

__all__ = ["ApiError", "AsyncClient", "BatchResult", "Client", "Event", "SubmittedBatch", "result_row"]

DEFAULT_URL = "http://127.0.0.1:8000"
CA_FILE_ENV = "CELLBLOCK_CA_FILE"  # a CA bundle that signed the server's certificate (a private CA)
STREAM_READ_TIMEOUT_S = 30.0  # the server sends a keepalive every 10 s; silence this long means a dead link
POLL_START_S, POLL_MAX_S = 0.05, 1.0
BATCH_WAIT_S = 60.0  # the longest the server holds a batch long-poll (BATCH_WAIT_MAX_S in cellblock.api.v1)
PROGRESS_WAIT_S = 1.0  # the long-poll's bound when an on_progress callback wants to see the batch as it runs

JobLike = JobSpec | Mapping[str, Any] | str
TestLike = TestCase | Mapping[str, Any] | tuple[str, str | None]
ProgressCallback = Callable[["BatchResult"], None]


Verify = bool | str | os.PathLike[str] | ssl.SSLContext | None


def tls_verify(verify: Verify) -> bool | ssl.SSLContext:
    """httpx's ``verify`` for ours: a CA bundle's path becomes a context; None means $CELLBLOCK_CA_FILE or True."""
    if verify is None:
        verify = os.environ.get(CA_FILE_ENV) or True
    if isinstance(verify, bool | ssl.SSLContext):
        return verify
    try:
        return ssl.create_default_context(cafile=os.fspath(verify))
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"cannot use the CA file {os.fspath(verify)}: {exc}", field="verify") from exc


class ApiError(CellblockError):
    """The server refused or failed a request, or could not be reached.

    ``status`` is the HTTP status (None when no answer came: ``code`` is then ``connection_failed`` or
    ``timeout``); ``code``, ``message`` and ``field`` are the server's error shape.
    """

    def __init__(
        self, status: int | None, code: str, message: str, field: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s

    @property
    def is_user_error(self) -> bool:
        """A 4xx: the request was wrong and resending it unchanged will not help."""
        return self.status is not None and 400 <= self.status < 500

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{self.status or '-'} {self.code}{where}: {self.message}"


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``type`` ∈ state | step | stdout | stderr | result; ``data`` is its JSON."""

    id: str
    type: str
    data: Any

    def result(self) -> JobResult:
        """The JobResult carried by a ``result`` event."""
        if self.type != "result":
            raise ValueError(f"a {self.type!r} event carries no result")
        return JobResult.model_validate(self.data)


class SubmittedBatch(NamedTuple):
    id: str
    job_ids: list[str]


@dataclass
class BatchResult:
    """A batch as the server reports it: every job's result (or state, while it runs), in request order."""

    id: str
    total: int
    done: bool
    jobs: list[JobResult]
    states: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> BatchResult:
        return cls(
            id=body["id"],
            total=body["total"],
            done=body["done"],
            states=body.get("states", {}),
            verdicts=body.get("verdicts", {}),
            jobs=[JobResult.model_validate(j) for j in body.get("jobs", [])],
        )

    @property
    def finished(self) -> int:
        return sum(1 for job in self.jobs if job.state in TERMINAL_STATES)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per job (columns: see `result_row`), with nullable integer columns."""
        import pandas as pd

        frame = pd.DataFrame([result_row(job) for job in self.jobs], columns=list(_ROW_DTYPES))
        return frame.astype(_ROW_DTYPES)


_ROW_DTYPES: dict[str, Any] = {
    "id": "string",
    "language": "string",
    "state": "string",
    "verdict": "string",
    "exit_code": "Int64",
    "signal": "string",
    "cpu_time_s": "Float64",
    "wall_time_s": "Float64",
    "memory_kib": "Int64",
    "tests": "Int64",
    "tests_accepted": "Int64",
    "worker": "string",
    "message": "string",
    "created_at": "datetime64[us, UTC]",
    "finished_at": "datetime64[us, UTC]",
}


def _deciding_test(result: JobResult) -> TestResult | None:
    """The test that decided the verdict: the first not accepted one that ran, else the last that ran."""
    ran = [t for t in result.tests if t.run is not None]
    return next((t for t in ran if t.verdict != Verdict.ACCEPTED), ran[-1] if ran else None)


def result_row(result: JobResult) -> dict[str, Any]:
    """A job as one flat row: exit code and signal of the deciding test; CPU, wall and memory are the
    maxima over its tests (None when nothing ran, e.g. a compilation error)."""
    runs = [t.run for t in result.tests if t.run is not None]
    deciding = _deciding_test(result)
    run = deciding.run if deciding is not None else None
    return {
        "id": result.id,
        "language": result.language,
        "state": result.state.value,
        "verdict": result.verdict.value if result.verdict else None,
        "exit_code": run.exit_code if run else None,
        "signal": run.signal if run else None,
        "cpu_time_s": max((r.cpu_time_s for r in runs), default=None),
        "wall_time_s": max((r.wall_time_s for r in runs), default=None),
        "memory_kib": max((r.memory_kib for r in runs), default=None),
        "tests": len(result.tests),
        "tests_accepted": sum(1 for t in result.tests if t.verdict == Verdict.ACCEPTED),
        "worker": result.worker,
        "message": result.message,
        "created_at": result.created_at,
        "finished_at": result.finished_at,
    }


# --- pure helpers shared by both clients ---


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, tuple):
        stdin, expected = value
        return {"stdin": stdin, "expected_output": expected}
    if isinstance(value, Mapping):
        return dict(value)
    return value


def job_payload(
    job: JobLike,
    source: str | None = None,
    *,
    stdin: str | None = None,
    tests: Sequence[TestLike] | None = None,
    limits: Limits | Mapping[str, Any] | None = None,
    file_name: str = "main",
    **fields: Any,
) -> dict[str, Any]:
    """The JSON body of a job: from a JobSpec, a dict, or a language name plus source (and options)."""
    if isinstance(job, str):
        if source is None:
            raise TypeError("source is required when the job is given as a language name")
        payload: dict[str, Any] = {"language": job, "files": [{"name": file_name, "content": source}]}
    else:
        if source is not None:
            raise TypeError("source is only for a job given as a language name")
        payload = _plain(job)
    if stdin is not None:
        payload["stdin"] = stdin
    if tests is not None:
        payload["tests"] = [_plain(t) for t in tests]
    if limits is not None:
        payload["limits"] = _plain(limits)
    payload.update({k: _plain(v) for k, v in fields.items()})
    return payload


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:  # an HTTP date: rare; one second is a sane wait
        return 1.0


def error_from(response: httpx.Response) -> ApiError:
    """The ApiError for a non-success answer (the server's error shape, or a summary of whatever came)."""
    retry = _retry_after(response) if "retry-after" in response.headers else None
    try:
        body = response.json()
        error = body["error"]
        return ApiError(response.status_code, str(error["code"]), str(error["message"]), error.get("field"), retry)
    except (ValueError, KeyError, TypeError):
        text = response.text[:200].strip() or response.reason_phrase
        return ApiError(response.status_code, f"http_{response.status_code}", text, None, retry)


def _unreachable(exc: httpx.TransportError) -> ApiError:
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_failed"
    return ApiError(None, code, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class SseDecoder:
    """Server-sent events, line by line (the text/event-stream rules we need: id, event, data, comments)."""

    def __init__(self) -> None:
        self.id = ""  # persists across events, as the SSE rules say
        self.type = "message"
        self.data: list[str] = []
        self.keepalive = False  # a comment line arrived; the reader clears it

    def feed(self, line: str) -> Event | None:
        """The event completed by this line, if any. A comment sets `keepalive` until the next event."""
        if line == "":
            if not self.data:
                return None
            done = Event(self.id, self.type, json.loads("\n".join(self.data)))
            self.type, self.data = "message", []
            return done
        if line.startswith(":"):
            self.keepalive = True
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self.id = value
        elif name == "event":
            self.type = value
        elif name == "data":
            self.data.append(value)
        return None


@dataclass
class _Plan:
    """When to resend a request: 503 after Retry-After (capped); no answer, if resending cannot run a job
    twice (nothing was sent, or the request is a GET/DELETE or carries an Idempotency-Key)."""

    max_retries: int
    max_retry_wait_s: float

    def delay(self, attempt: int, error: ApiError, resend_safe: bool) -> float | None:
        """Seconds to wait before resending, or None to give up and raise."""
        if attempt >= self.max_retries:
            return None
        if error.status == 503:
            return min(error.retry_after_s if error.retry_after_s is not None else 1.0, self.max_retry_wait_s)
        if error.status is None and resend_safe:
            return min(0.1 * 2.0**attempt, self.max_retry_wait_s)
        return None

    def next_try(
        self, attempt: int, error: ApiError, exc: Exception | None, method: str, kwargs: dict[str, Any], auto_key: bool
    ) -> float | None:
        headers = kwargs.get("headers") or {}
        never_sent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
        pause = self.delay(attempt, error, never_sent or method in ("GET", "DELETE") or "Idempotency-Key" in headers)
        if pause is not None and auto_key and error.status == 503:
            # 503 means nothing was accepted: a key of our own making starts afresh (the server may have bound
            # the old one before refusing).
            kwargs["headers"] = {**headers, "Idempotency-Key": uuid.uuid4().hex}
        return pause


class _EndedEarly(Exception):
    """The server closed an event stream before its result event (e.g. the API restarted)."""


def _check_id(job_id: str) -> str:
    """The id as one path segment (the server validates it and answers 422 naming ``id``)."""
    return quote(job_id, safe="") or "-"


def _poll_interval(previous: float) -> float:
    return min(previous * 1.5, POLL_MAX_S)


def _batch_wait_s(deadline: float | None, on_progress: ProgressCallback | None) -> float:
    """The ``wait_s`` of the next batch long-poll: the server's longest, bounded by the deadline and progress."""
    longest = PROGRESS_WAIT_S if on_progress is not None else BATCH_WAIT_S
    return longest if deadline is None else max(0.01, min(longest, deadline - time.monotonic()))


class _Base:
    timeout_s: float

    def __init__(self, max_retries: int, max_retry_wait_s: float) -> None:
        self._plan = _Plan(max_retries, max_retry_wait_s)

    def _batch_args(self, batch_id: str, wait: bool, wait_s: float | None) -> dict[str, Any]:
        """The GET of a batch: with ``wait``, the long-poll's parameters and a read timeout that outlasts it."""
        if not wait:
            return {"method": "GET", "path": f"/v1/batches/{_check_id(batch_id)}"}
        params = {"wait": "true"} if wait_s is None else {"wait": "true", "wait_s": repr(float(wait_s))}
        timeout = httpx.Timeout(self.timeout_s, read=(wait_s or BATCH_WAIT_S) + self.timeout_s)
        return {"method": "GET", "path": f"/v1/batches/{_check_id(batch_id)}", "params": params, "timeout": timeout}

    @staticmethod
    def _submit_args(
        job: JobLike,
        source: str | None,
        idempotency_key: str | None,
        stdin: str | None,
        tests: Sequence[TestLike] | None,
        limits: Limits | Mapping[str, Any] | None,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        """The keyword arguments of a job submission: its body, and an Idempotency-Key (ours unless given)."""
        payload = job_payload(job, source, stdin=stdin, tests=tests, limits=limits, **fields)
        key = idempotency_key or payload.get("idempotency_key")
        return {"json": payload, "headers": {"Idempotency-Key": str(key or uuid.uuid4().hex)}, "auto_key": not key}


class Client(_Base):
    """A blocking client. Use it as a context manager, or call `close()`.

    ``http`` lets you pass your own configured `httpx.Client` (auth, proxies, hooks); its ``base_url`` must
    point at the server. ``timeout_s`` bounds connecting and each ordinary request; waiting for a job is
    bounded only by the ``timeout_s`` you give `run`/`wait`/`batch` (default: as long as it takes).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        max_retry_wait_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        http: httpx.Client | None = None,
        verify: Verify = None,
    ) -> None:
        super().__init__(max_retries, max_retry_wait_s)
        self.timeout_s = timeout_s
        self._http = http or httpx.Client(
            base_url=base_url, timeout=timeout_s, headers=dict(headers or {}), verify=tls_verify(verify)
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), auto_key: bool = False, **kwargs: Any
    ) -> httpx.Response:
        attempt = 0
        while True:
            failure: Exception | None = None
            try:
                response = self._http.request(method, path, **kwargs)
                if response.status_code in ok:
                    return response
                error = error_from(response)
            except httpx.TransportError as exc:
                error, failure = _unreachable(exc), exc
            pause = self._plan.next_try(attempt, error, failure, method, kwargs, auto_key)
            if pause is None:
                raise error from failure
            attempt += 1
            time.sleep(pause)

    def submit(
        self,
        job: JobLike,
        source: str | None = None,
        *,
        stdin: str | None = None,
        tests: Sequence[TestLike] | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> str:
        """Queue a job; return its id. ``job``: a JobSpec, its dict, or a language name with ``source``."""
        args = self._submit_args(job, source, idempotency_key, stdin, tests, limits, fields)
        response = self._request("POST", "/v1/jobs", ok=(202,), **args)
        return str(response.json()["id"])

    def run(
        self,
        job: JobLike,
        source: str | None = None,
        *,
        stdin: str | None = None,
        tests: Sequence[TestLike] | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> JobResult:
        """Run a job and return its result (one round trip: ``POST /v1/jobs?wait=true``).

        ``client.run("python3", "print(input())", stdin="hi")``; ``tests=[("1 2", "3"), ...]`` or TestCase
        objects; ``limits={"cpu_time_s": 1}``; any other JobSpec field as a keyword (``compile_options=...``).
        With ``timeout_s``, raises ApiError(code="timeout") if the job has not finished by then.
        """
        if timeout_s is not None:
            job_id = self.submit(
                job, source, stdin=stdin, tests=tests, limits=limits, idempotency_key=idempotency_key, **fields
            )
            return self.wait(job_id, timeout_s)
        args = self._submit_args(job, source, idempotency_key, stdin, tests, limits, fields)
        response = self._request(
            "POST",
            "/v1/jobs",
            ok=(200, 202),
            params={"wait": "true"},
            timeout=httpx.Timeout(self.timeout_s, read=None),
            **args,
        )
        if response.status_code == 200:
            return JobResult.model_validate(response.json())
        return self.wait(str(response.json()["id"]))  # the server's own wait ran out: keep waiting

    def get(self, job_id: str) -> JobResult:
        """The job now: its state while queued or running, its full result once finished."""
        return JobResult.model_validate(self._request("GET", f"/v1/jobs/{_check_id(job_id)}").json())

    def wait(self, job_id: str, timeout_s: float | None = None) -> JobResult:
        """Block until the job has finished (done, failed or cancelled) and return its result."""
        result = self.get(job_id)
        if result.state in TERMINAL_STATES:
            return result
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for event in self._events(job_id, None, deadline):
            if event is not None and event.type == "result":
                return event.result()
        raise ApiError(None, "timeout", f"job {job_id} had not finished after {timeout_s} s", "id")

    def stream(self, job_id: str, *, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's events as they happen, ending with its ``result`` event. Resumes after a dropped
        connection with ``Last-Event-ID``; pass ``last_event_id`` to start after an event you have seen."""
        for event in self._events(job_id, last_event_id, None):
            if event is not None:
                yield event

    def _events(self, job_id: str, last: str | None, deadline: float | None) -> Iterator[Event | None]:
        """Events, with None for each keepalive; stops at the result event or the deadline. A connection that
        drops or ends early is reopened after the last event seen (a bounded number of times in a row)."""
        path, failures = f"/v1/jobs/{_check_id(job_id)}/events", 0
        while deadline is None or time.monotonic() < deadline:
            read = STREAM_READ_TIMEOUT_S if deadline is None else max(0.01, deadline - time.monotonic())
            failure: Exception | None = None
            try:
                with self._http.stream(
                    "GET",
                    path,
                    headers={"Last-Event-ID": last} if last else {},
                    timeout=httpx.Timeout(self.timeout_s, read=read),
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        raise error_from(response)
                    decoder = SseDecoder()
                    for line in response.iter_lines():
                        event = decoder.feed(line)
                        if event is not None:
                            failures, last = 0, event.id or last
                            yield event
                            if event.type == "result":
                                return
                        elif decoder.keepalive:
                            decoder.keepalive = False
                            yield None
                            if deadline is not None:
                                break  # reopen with a read timeout that ends at the deadline
                    else:
                        failure = _EndedEarly()
            except httpx.TransportError as exc:
                failure = exc
            if failure is not None and not (deadline is not None and time.monotonic() >= deadline):
                failures += 1
                if failures > self._plan.max_retries:
                    raise ApiError(
                        None,
                        "connection_failed",
                        f"the event stream of job {job_id} keeps breaking: {type(failure).__name__}",
                        "id",
                    ) from failure
                time.sleep(min(0.1 * 2.0**failures, 2.0))

    def cancel(self, job_id: str) -> JobState:
        """Cancel a queued or running job (a running sandbox is killed). 409 ``already_finished`` if done."""
        response = self._request("DELETE", f"/v1/jobs/{_check_id(job_id)}", ok=(202,))
        return JobState(response.json()["state"])

    def submit_batch(self, jobs: Sequence[JobLike]) -> SubmittedBatch:
        """Queue many jobs in one request; return the batch id and the job ids, in order."""
        body = self._request("POST", "/v1/batches", ok=(202,), json={"jobs": [job_payload(j) for j in jobs]}).json()
        return SubmittedBatch(str(body["id"]), [str(i) for i in body["jobs"]])

    def get_batch(self, batch_id: str, wait: bool = False, *, wait_s: float | None = None) -> BatchResult:
        """The batch now; with ``wait``, once every job has finished or after ``wait_s`` (server's default and
        maximum: 60 s), whichever comes first: ``done`` says which."""
        return BatchResult.from_json(self._request(**self._batch_args(batch_id, wait, wait_s)).json())

    def wait_batch(
        self, batch_id: str, timeout_s: float | None = None, on_progress: ProgressCallback | None = None
    ) -> BatchResult:
        """Long-poll the batch until every job has finished; ``on_progress`` sees each answer's BatchResult (one
        a second at least, while the batch runs). With ``timeout_s``, raises ApiError(code="timeout") after it."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        interval = POLL_START_S
        while True:
            wait_s, asked = _batch_wait_s(deadline, on_progress), time.monotonic()
            batch = self.get_batch(batch_id, True, wait_s=wait_s)
            if on_progress is not None:
                on_progress(batch)
            if batch.done:
                return batch
            if deadline is not None and time.monotonic() >= deadline:
                raise ApiError(None, "timeout", f"batch {batch_id} had not finished after {timeout_s} s", "id")
            if time.monotonic() - asked < wait_s / 2:  # not done, yet answered early: a server without the long-poll
                time.sleep(interval)
                interval = _poll_interval(interval)

    def batch(
        self, jobs: Sequence[JobLike], timeout_s: float | None = None, on_progress: ProgressCallback | None = None
    ) -> BatchResult:
        """Submit many jobs and wait for all of them. ``.to_dataframe()`` on the result gives a table."""
        return self.wait_batch(self.submit_batch(jobs).id, timeout_s, on_progress)

    def languages(self) -> list[LanguageInfo]:
        """Languages that at least one live worker runs (self-test passed), with versions."""
        from cellblock.api.schemas import LanguageInfo

        return [LanguageInfo.model_validate(x) for x in self._request("GET", "/v1/languages").json()]

    def workers(self) -> list[WorkerInfo]:
        """Live workers: host, slots, busy, languages, version, last seen."""
        return [WorkerInfo.model_validate(w) for w in self._request("GET", "/v1/workers").json()["workers"]]


class AsyncClient(_Base):
    """The same API for asyncio: every method of `Client`, awaited (`stream` is an async iterator)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        max_retry_wait_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        verify: Verify = None,
    ) -> None:
        super().__init__(max_retries, max_retry_wait_s)
        self.timeout_s = timeout_s
        self._http = http or httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, headers=dict(headers or {}), verify=tls_verify(verify)
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), auto_key: bool = False, **kwargs: Any
    ) -> httpx.Response:
        attempt = 0
        while True:
            failure: Exception | None = None
            try:
                response = await self._http.request(method, path, **kwargs)
                if response.status_code in ok:
                    return response
                error = error_from(response)
            except httpx.TransportError as exc:
                error, failure = _unreachable(exc), exc
            pause = self._plan.next_try(attempt, error, failure, method, kwargs, auto_key)
            if pause is None:
                raise error from failure
            attempt += 1
            await asyncio.sleep(pause)

    async def submit(
        self,
        job: JobLike,
        source: str | None = None,
        *,
        stdin: str | None = None,
        tests: Sequence[TestLike] | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> str:
        args = self._submit_args(job, source, idempotency_key, stdin, tests, limits, fields)
        response = await self._request("POST", "/v1/jobs", ok=(202,), **args)
        return str(response.json()["id"])

    async def run(
        self,
        job: JobLike,
        source: str | None = None,
        *,
        stdin: str | None = None,
        tests: Sequence[TestLike] | None = None,
        limits: Limits | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> JobResult:
        if timeout_s is not None:
            job_id = await self.submit(
                job, source, stdin=stdin, tests=tests, limits=limits, idempotency_key=idempotency_key, **fields
            )
            return await self.wait(job_id, timeout_s)
        args = self._submit_args(job, source, idempotency_key, stdin, tests, limits, fields)
        response = await self._request(
            "POST",
            "/v1/jobs",
            ok=(200, 202),
            params={"wait": "true"},
            timeout=httpx.Timeout(self.timeout_s, read=None),
            **args,
        )
        if response.status_code == 200:
            return JobResult.model_validate(response.json())
        return await self.wait(str(response.json()["id"]))

    async def get(self, job_id: str) -> JobResult:
        return JobResult.model_validate((await self._request("GET", f"/v1/jobs/{_check_id(job_id)}")).json())

    async def wait(self, job_id: str, timeout_s: float | None = None) -> JobResult:
        result = await self.get(job_id)
        if result.state in TERMINAL_STATES:
            return result
        try:
            async with asyncio.timeout(timeout_s), aclosing(self.stream(job_id)) as events:
                async for event in events:
                    if event.type == "result":
                        return event.result()
        except TimeoutError:
            pass
        raise ApiError(None, "timeout", f"job {job_id} had not finished after {timeout_s} s", "id")

    async def stream(self, job_id: str, *, last_event_id: str | None = None) -> AsyncGenerator[Event, None]:
        path, last, failures = f"/v1/jobs/{_check_id(job_id)}/events", last_event_id, 0
        timeout = httpx.Timeout(self.timeout_s, read=STREAM_READ_TIMEOUT_S)
        while True:
            failure: Exception = _EndedEarly()
            try:
                headers = {"Last-Event-ID": last} if last else {}
                async with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise error_from(response)
                    decoder = SseDecoder()
                    async for line in response.aiter_lines():
                        event = decoder.feed(line)
                        if event is not None:
                            failures, last = 0, event.id or last
                            yield event
                            if event.type == "result":
                                return
            except httpx.TransportError as exc:
                failure = exc
            failures += 1
            if failures > self._plan.max_retries:
                raise ApiError(
                    None,
                    "connection_failed",
                    f"the event stream of job {job_id} keeps breaking: {type(failure).__name__}",
                    "id",
                ) from failure
            await asyncio.sleep(min(0.1 * 2.0**failures, 2.0))

    async def cancel(self, job_id: str) -> JobState:
        response = await self._request("DELETE", f"/v1/jobs/{_check_id(job_id)}", ok=(202,))
        return JobState(response.json()["state"])

    async def submit_batch(self, jobs: Sequence[JobLike]) -> SubmittedBatch:
        response = await self._request("POST", "/v1/batches", ok=(202,), json={"jobs": [job_payload(j) for j in jobs]})
        body = response.json()
        return SubmittedBatch(str(body["id"]), [str(i) for i in body["jobs"]])

    async def get_batch(self, batch_id: str, wait: bool = False, *, wait_s: float | None = None) -> BatchResult:
        return BatchResult.from_json((await self._request(**self._batch_args(batch_id, wait, wait_s))).json())

    async def wait_batch(
        self, batch_id: str, timeout_s: float | None = None, on_progress: ProgressCallback | None = None
    ) -> BatchResult:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        interval = POLL_START_S
        while True:
            wait_s, asked = _batch_wait_s(deadline, on_progress), time.monotonic()
            batch = await self.get_batch(batch_id, True, wait_s=wait_s)
            if on_progress is not None:
                on_progress(batch)
            if batch.done:
                return batch
            if deadline is not None and time.monotonic() >= deadline:
                raise ApiError(None, "timeout", f"batch {batch_id} had not finished after {timeout_s} s", "id")
            if time.monotonic() - asked < wait_s / 2:  # not done, yet answered early: a server without the long-poll
                await asyncio.sleep(interval)
                interval = _poll_interval(interval)

    async def batch(
        self, jobs: Sequence[JobLike], timeout_s: float | None = None, on_progress: ProgressCallback | None = None
    ) -> BatchResult:
        return await self.wait_batch((await self.submit_batch(jobs)).id, timeout_s, on_progress)

    async def languages(self) -> list[LanguageInfo]:
        from cellblock.api.schemas import LanguageInfo

        return [LanguageInfo.model_validate(x) for x in (await self._request("GET", "/v1/languages")).json()]

    async def workers(self) -> list[WorkerInfo]:
        body = (await self._request("GET", "/v1/workers")).json()
        return [WorkerInfo.model_validate(w) for w in body["workers"]]
