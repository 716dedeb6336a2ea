"""The Python SDK (`cellblock.Client`, `cellblock.AsyncClient`) against the real service: Redis, a worker, the API."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pandas as pd
import pytest

from cellblock import ApiError, AsyncClient, Client, JobState, Verdict
from cellblock import TestCase as Case
from cellblock.client import Event, SseDecoder
from tests.service.conftest import Service, make_service

pytestmark = pytest.mark.sandbox

DOUBLE = "print(input() * 2)"
ADD_C = '#include <stdio.h>\nint main(void){int a,b;scanf("%d %d",&a,&b);printf("%d\\n",a+b);return 0;}\n'
TICKER = "import time\nfor i in range(5):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.05)\n"
SLEEPER = "import time\ntime.sleep(30)\n"


@pytest.fixture
def cb(service: Service) -> Iterator[Client]:
    with Client(service.base_url) as client:
        yield client


def test_run_returns_the_job_result(cb: Client) -> None:
    result = cb.run("python3", DOUBLE, stdin="ab")
    assert result.state == JobState.DONE and result.verdict == Verdict.ACCEPTED
    run = result.tests[0].run
    assert run is not None and run.stdout == "abab\n" and run.exit_code == 0
    assert re.fullmatch(r"[0-9a-f]{32}", result.id) and result.worker and result.language == "python3"


def test_run_with_tests_limits_and_extra_fields(cb: Client) -> None:
    result = cb.run(
        "c",
        ADD_C,
        tests=[("1 2", "3"), Case(stdin="2 2", expected_output="5"), {"stdin": "5 5", "expected_output": "10"}],
        limits={"cpu_time_s": 1, "memory_mib": 64},
        compile_options=["-O2"],
    )
    assert result.verdict == Verdict.WRONG_ANSWER
    assert [t.verdict for t in result.tests] == [Verdict.ACCEPTED, Verdict.WRONG_ANSWER, Verdict.ACCEPTED]
    assert result.compile is not None and result.compile.exit_code == 0
    assert result.tests[1].run is not None and result.tests[1].run.stdout == "4\n"


def test_run_takes_a_whole_job_spec_dict(cb: Client) -> None:
    spec = {"language": "python3", "files": [{"name": "m.py", "content": "import sys; sys.exit(3)"}]}
    result = cb.run(spec)
    assert result.verdict == Verdict.RUNTIME_ERROR
    assert result.tests[0].run is not None and result.tests[0].run.exit_code == 3


def test_submit_then_wait_then_get(cb: Client) -> None:
    job_id = cb.submit("python3", DOUBLE, stdin="xy")
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    result = cb.wait(job_id, timeout_s=60)
    assert result.id == job_id and result.state == JobState.DONE and result.verdict == Verdict.ACCEPTED
    assert result.tests[0].run is not None and result.tests[0].run.stdout == "xyxy\n"
    assert cb.get(job_id) == result


def test_the_same_idempotency_key_names_the_same_job(cb: Client) -> None:
    key = f"sdk-{time.time_ns()}"
    first = cb.submit("python3", DOUBLE, stdin="a", idempotency_key=key)
    assert cb.submit("python3", DOUBLE, stdin="a", idempotency_key=key) == first
    assert cb.submit("python3", DOUBLE, stdin="a") != first


def test_wait_times_out_then_cancel_kills_the_job(cb: Client) -> None:
    job_id = cb.submit("python3", SLEEPER, limits={"wall_time_s": 60, "cpu_time_s": 1})
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        cb.wait(job_id, timeout_s=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    assert caught.value.status is None and caught.value.code == "timeout" and caught.value.field == "id"
    assert cb.cancel(job_id) == JobState.CANCELLED
    result = cb.wait(job_id, timeout_s=30)
    assert result.state == JobState.CANCELLED and cb.cancel(job_id) == JobState.CANCELLED  # cancel is idempotent
    done = cb.run("python3", DOUBLE, stdin="a")
    with pytest.raises(ApiError) as finished:
        cb.cancel(done.id)
    assert (finished.value.status, finished.value.code, finished.value.field) == (409, "already_finished", "id")


def test_stream_yields_states_output_as_produced_and_the_result(cb: Client) -> None:
    job_id = cb.submit("python3", TICKER)
    events = list(cb.stream(job_id))
    types = [e.type for e in events]
    assert types[0] == "state" and events[0].data["state"] == "queued"
    assert {"state", "step", "stdout"} <= set(types) and types[-1] == "result" and types.count("result") == 1
    assert "".join(e.data["data"] for e in events if e.type == "stdout") == "".join(f"tick {i}\n" for i in range(5))
    assert len([e for e in events if e.type == "stdout"]) >= 2  # several chunks: it was streamed, not at the end
    ids = [tuple(map(int, e.id.split("-"))) for e in events]
    assert ids == sorted(set(ids))
    final = events[-1].result()
    assert final.id == job_id and final.verdict == Verdict.ACCEPTED


def test_stream_starts_after_last_event_id(cb: Client) -> None:
    result = cb.run("python3", TICKER)
    everything = list(cb.stream(result.id))
    resumed = list(cb.stream(result.id, last_event_id=everything[2].id))
    assert resumed == everything[3:]


class DropOnce(httpx.BaseTransport):
    """A real HTTP transport that cuts the first event stream after a few lines (a dropped connection)."""

    def __init__(self, lines_before_drop: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.lines = lines_before_drop
        self.dropped = False
        self.resumed_from: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/events"):
            return response
        self.resumed_from.append(request.headers.get("last-event-id"))
        if self.dropped:
            return response
        self.dropped = True
        upstream = response.stream
        limit = self.lines

        class Cut(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                seen = 0
                for chunk in upstream:  # type: ignore[union-attr]
                    for line in chunk.splitlines(keepends=True):
                        yield line
                        seen += line.count(b"\n")
                        if seen >= limit:
                            raise httpx.ReadError("connection reset by peer (injected)")

            def close(self) -> None:
                upstream.close()  # type: ignore[union-attr]

        return httpx.Response(response.status_code, headers=response.headers, stream=Cut(), request=request)

    def close(self) -> None:
        self.inner.close()


def test_stream_resumes_after_a_dropped_connection(service: Service, cb: Client) -> None:
    job_id = cb.submit("python3", TICKER)
    reference = list(cb.stream(job_id))
    transport = DropOnce(lines_before_drop=10)  # two events (id, event, data, blank line) and half of a third
    with Client(http=httpx.Client(base_url=service.base_url, transport=transport)) as flaky:
        events = list(flaky.stream(job_id))
    assert transport.dropped and transport.resumed_from == [None, reference[1].id]
    assert events == reference  # nothing lost, nothing repeated


class AsyncDropOnce(httpx.AsyncBaseTransport):
    """`DropOnce` for the AsyncClient."""

    def __init__(self, lines_before_drop: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lines = lines_before_drop
        self.resumed_from: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/events"):
            return response
        self.resumed_from.append(request.headers.get("last-event-id"))
        if len(self.resumed_from) > 1:
            return response
        upstream, limit = response.stream, self.lines

        class Cut(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                seen = 0
                async for chunk in upstream:  # type: ignore[union-attr]
                    for line in chunk.splitlines(keepends=True):
                        yield line
                        seen += line.count(b"\n")
                        if seen >= limit:
                            raise httpx.ReadError("connection reset by peer (injected)")

            async def aclose(self) -> None:
                await upstream.aclose()  # type: ignore[union-attr]

        return httpx.Response(response.status_code, headers=response.headers, stream=Cut(), request=request)


def test_async_stream_resumes_after_a_dropped_connection(service: Service, cb: Client) -> None:
    job_id = cb.submit("python3", TICKER)
    reference = list(cb.stream(job_id))
    transport = AsyncDropOnce(lines_before_drop=10)

    async def collect() -> list[Event]:
        async with AsyncClient(http=httpx.AsyncClient(base_url=service.base_url, transport=transport)) as flaky:
            return [event async for event in flaky.stream(job_id)]

    assert asyncio.run(collect()) == reference
    assert transport.resumed_from == [None, reference[1].id]


def test_batch_and_its_dataframe(cb: Client) -> None:
    jobs = [
        {"language": "python3", "files": [{"name": "a.py", "content": DOUBLE}], "stdin": "z"},
        {"language": "c", "files": [{"name": "b.c", "content": "int main( {"}]},
        {"language": "python3", "files": [{"name": "c.py", "content": "import sys; print('x'); sys.exit(7)"}]},
    ]
    seen: list[int] = []
    batch = cb.batch(jobs, timeout_s=120, on_progress=lambda b: seen.append(b.finished))
    assert batch.done and batch.total == 3 and seen[-1] == 3
    assert batch.verdicts == {"accepted": 1, "compilation_error": 1, "runtime_error": 1}
    frame = batch.to_dataframe()
    assert list(frame.columns) == [
        "id", "language", "state", "verdict", "exit_code", "signal", "cpu_time_s", "wall_time_s", "memory_kib",
        "tests", "tests_accepted", "worker", "message", "created_at", "finished_at",
    ]  # fmt: skip
    assert list(frame["id"]) == [job.id for job in batch.jobs] and len(set(frame["id"])) == 3
    assert list(frame["verdict"]) == ["accepted", "compilation_error", "runtime_error"]
    assert list(frame["language"]) == ["python3", "c", "python3"]
    assert (frame["state"] == "done").all() and frame["worker"].notna().all()
    accepted, broken, failing = (frame.iloc[i] for i in range(3))
    assert accepted["exit_code"] == 0 and accepted["memory_kib"] > 0 and 0 < accepted["cpu_time_s"] < 1
    assert pd.isna(broken["exit_code"]) and pd.isna(broken["cpu_time_s"]) and broken["tests_accepted"] == 0
    assert failing["exit_code"] == 7 and failing["tests"] == 1 and failing["tests_accepted"] == 0
    assert str(frame["exit_code"].dtype) == "Int64" and str(frame["memory_kib"].dtype) == "Int64"
    assert (frame["finished_at"] >= frame["created_at"]).all()


def test_api_errors_carry_status_code_message_and_field(cb: Client) -> None:
    cases = [
        ({"language": "cobol-9000"}, 422, "unknown_language", "language"),
        ({"limits": {"cpu_time_s": 10_000}}, 422, "limit_above_maximum", "limits.cpu_time_s"),
        ({"colour": "blue"}, 422, "unknown_field", "colour"),
        ({"limits": {"cpu_time_s": "fast"}}, 422, "validation_failed", "limits.cpu_time_s"),
    ]
    for override, status, code, field in cases:
        spec = {"language": "python3", "files": [{"name": "m.py", "content": "print(1)"}], **override}
        with pytest.raises(ApiError) as caught:
            cb.run(spec)
        error = caught.value
        assert (error.status, error.code, error.field) == (status, code, field), error
        assert error.message and error.is_user_error and field in str(error)
    with pytest.raises(ApiError) as bad_id:
        cb.get("not-an-id")
    assert (bad_id.value.status, bad_id.value.code, bad_id.value.field) == (422, "validation_failed", "id")
    with pytest.raises(ApiError) as unknown:
        cb.wait("0" * 32)
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with pytest.raises(ApiError) as batch:
        cb.submit_batch([{"language": "python3", "files": [{"name": "m.py", "content": "print(1)"}]},
                         {"language": "python3", "files": [{"name": "m.py", "content": "  "}]}])  # fmt: skip
    assert batch.value.is_user_error and batch.value.field == "jobs[1].files[0].content"


def test_languages_and_workers(cb: Client) -> None:
    languages = {lang.name: lang for lang in cb.languages()}
    assert {"python3", "c"} <= set(languages)
    assert languages["python3"].source_file == "main.py" and languages["c"].compiled
    assert languages["python3"].version and languages["python3"].workers >= 1
    workers = cb.workers()
    assert len(workers) == 1 and workers[0].slots == 2 and workers[0].host == socket.gethostname()
    assert "python3" in workers[0].languages


def test_unreachable_server_is_an_api_error_without_status() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", max_retries=1, max_retry_wait_s=0.01) as client:
        with pytest.raises(ApiError) as caught:
            client.run("python3", "print(1)")
    assert caught.value.status is None and caught.value.code == "connection_failed"


def test_async_client_does_the_same(service: Service) -> None:
    async def scenario() -> None:
        async with AsyncClient(service.base_url) as client:
            result = await client.run("python3", DOUBLE, stdin="q")
            assert result.verdict == Verdict.ACCEPTED and result.tests[0].run is not None
            assert result.tests[0].run.stdout == "qq\n"
            job_id = await client.submit("python3", TICKER)
            events = [event async for event in client.stream(job_id)]
            assert events[-1].type == "result" and events[-1].result().verdict == Verdict.ACCEPTED
            assert (await client.wait(job_id)).id == job_id
            batch = await client.batch([{"language": "c", "files": [{"name": "a.c", "content": ADD_C}],
                                         "tests": [{"stdin": "2 3", "expected_output": "5"}]}])  # fmt: skip
            assert batch.done and batch.to_dataframe()["verdict"].tolist() == ["accepted"]
            sleeper = await client.submit("python3", SLEEPER, limits={"wall_time_s": 60})
            with pytest.raises(ApiError) as caught:
                await client.wait(sleeper, timeout_s=0.3)
            assert caught.value.code == "timeout"
            assert await client.cancel(sleeper) == JobState.CANCELLED
            assert (await client.wait(sleeper, timeout_s=30)).state == JobState.CANCELLED
            with pytest.raises(ApiError) as bad:
                await client.submit("python3", "print(1)", limits={"memory_mib": -1})
            assert bad.value.status == 422 and bad.value.field == "limits.memory_mib"
            assert "python3" in {lang.name for lang in await client.languages()}
            assert len(await client.workers()) == 1

    asyncio.run(scenario())


def test_503_is_retried_after_retry_after_then_raised() -> None:
    """A server whose backlog is full (no worker takes the first job) answers 503 + Retry-After."""
    svc = make_service(CELLBLOCK_MAX_BACKLOG="1")
    try:
        svc.start_api()
        keys: list[str] = []

        def record(request: httpx.Request) -> None:
            keys.append(request.headers.get("idempotency-key", ""))

        http = httpx.Client(base_url=svc.base_url, event_hooks={"request": [record]})
        with Client(http=http, max_retries=2, max_retry_wait_s=0.05) as client:
            client.submit("python3", "print(1)")  # queued; nobody runs it
            keys.clear()
            started = time.monotonic()
            with pytest.raises(ApiError) as caught:
                client.submit("python3", "print(2)")
            assert time.monotonic() - started >= 0.1  # two waits, each capped at 0.05 s
            assert (caught.value.status, caught.value.code, caught.value.retry_after_s) == (503, "backlog_full", 5)
            assert len(keys) == 3 and len(set(keys)) == 3  # our own key is renewed: nothing was accepted
            keys.clear()
            with contextlib.suppress(ApiError):
                client.submit("python3", "print(3)", idempotency_key="mine")
            assert len(keys) >= 2 and set(keys) == {"mine"}  # a key the caller chose is resent unchanged
    finally:
        svc.stop()
        shutil.rmtree(svc.root, ignore_errors=True)


def test_sse_decoder_follows_the_event_stream_rules() -> None:
    decoder = SseDecoder()
    lines = ["id: 1-0", "event: state", 'data: {"state":', 'data: "queued"}', "", ": keepalive", "",
             "data: 5", ""]  # fmt: skip
    out = [decoder.feed(line) for line in lines]
    assert out[4] == Event("1-0", "state", {"state": "queued"})
    assert out[8] == Event("1-0", "message", 5)  # id persists; type resets to "message"
    assert decoder.keepalive and sum(e is not None for e in out) == 2
