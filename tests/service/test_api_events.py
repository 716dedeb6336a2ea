"""GET /v1/jobs/{id}/events: server-sent events as the job runs, resumable with Last-Event-ID."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.sandbox

# Prints a line to stdout (and one to stderr) every 100 ms, flushing each.
TICKER = (
    "import sys, time\n"
    "for i in range(10):\n"
    "    print(f'tick {i}', flush=True)\n"
    "    print(f'err {i}', file=sys.stderr, flush=True)\n"
    "    time.sleep(0.1)\n"
)


@dataclass
class Event:
    id: str
    type: str
    data: Any
    at: float  # monotonic arrival time


class StreamStillOpen(Exception):
    """The server kept the stream open (sending keepalives) past the reader's deadline."""


def sse(response: httpx.Response, deadline: float) -> Iterator[Event]:
    """Parse a text/event-stream as it arrives; comments (keepalives) are skipped but still meet the deadline."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            raise StreamStillOpen
        if line == "":
            if "data" in fields:
                yield Event(fields.get("id", ""), fields.get("event", "message"), json.loads(fields["data"]),
                            time.monotonic())  # fmt: skip
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def read_events(
    api: httpx.Client, job_id: str, last_event_id: str | None = None, limit: int | None = None, timeout: float = 60
) -> list[Event]:
    """Events of one connection: all of them (the server ends the stream after `result`), or the first `limit`."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    with api.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse(response, deadline):
            events.append(event)
            if limit is not None and len(events) == limit:
                break
    return events


def submit(api: httpx.Client, source: str, language: str = "python3", name: str = "main.py", **fields: Any) -> str:
    response = api.post("/v1/jobs", json={"language": language, "files": [{"name": name, "content": source}], **fields})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def summary(events: list[Event]) -> list[tuple[str, ...]]:
    """The structure of a stream, without the output chunks and timestamps."""
    out: list[tuple[str, ...]] = []
    for e in events:
        if e.type == "state":
            out.append(("state", e.data["state"]))
        elif e.type == "step":
            out.append(("step", e.data["step"], e.data["phase"]))
        elif e.type == "result":
            out.append(("result", e.data["state"]))
    return out


def test_events_tell_the_states_the_steps_and_end_with_the_result(api: httpx.Client) -> None:
    tests = [{"stdin": "a", "expected_output": "a"}, {"id": "two", "stdin": "b", "expected_output": "b"}]
    job_id = submit(api, "print(input())", tests=tests)
    events = read_events(api, job_id)
    assert summary(events) == [
        ("state", "queued"),
        ("state", "running"),
        ("step", "1", "started"),
        ("step", "1", "finished"),
        ("step", "two", "started"),
        ("step", "two", "finished"),
        ("state", "done"),
        ("result", "done"),
    ]
    running = next(e for e in events if e.type == "state" and e.data["state"] == "running")
    assert running.data["worker"]
    finished = [e.data for e in events if e.type == "step" and e.data["phase"] == "finished"]
    assert [f["outcome"] for f in finished] == ["ok", "ok"]
    stdout = [(e.data["step"], e.data["data"]) for e in events if e.type == "stdout"]
    assert stdout == [("1", "a\n"), ("two", "b\n")]
    result = events[-1].data
    assert result["id"] == job_id and result["verdict"] == "accepted"
    assert result == api.get(f"/v1/jobs/{job_id}").json()
    ids = [e.id for e in events]
    assert len(set(ids)) == len(ids) and all(ids)


def test_a_compiled_job_streams_its_compile_step(api: httpx.Client) -> None:
    source = '#include <stdio.h>\nint main(void){puts("hi");return 0;}\n'
    events = read_events(api, submit(api, source, language="c", name="main.c"))
    assert summary(events) == [
        ("state", "queued"),
        ("state", "running"),
        ("step", "compile", "started"),
        ("step", "compile", "finished"),
        ("step", "1", "started"),
        ("step", "1", "finished"),
        ("state", "done"),
        ("result", "done"),
    ]


def test_output_is_streamed_as_it_is_produced(api: httpx.Client) -> None:
    job_id = submit(api, TICKER)
    events = read_events(api, job_id)
    stdout = [e for e in events if e.type == "stdout"]
    stderr = [e for e in events if e.type == "stderr"]
    assert "".join(e.data["data"] for e in stdout) == "".join(f"tick {i}\n" for i in range(10))
    assert "".join(e.data["data"] for e in stderr) == "".join(f"err {i}\n" for i in range(10))
    assert all(e.data["encoding"] == "utf8" and e.data["step"] == "1" for e in stdout + stderr)
    # One line every 100 ms: the lines come in separate events, spread over the run, not in a burst at the end.
    assert len(stdout) >= 6, [e.data["data"] for e in stdout]
    assert stdout[-1].at - stdout[0].at >= 0.6
    result = events[-1]
    assert result.type == "result"
    assert result.at - stdout[0].at >= 0.6


def test_reconnecting_with_last_event_id_resumes_after_that_event(api: httpx.Client) -> None:
    job_id = submit(api, TICKER)
    first = read_events(api, job_id, limit=5)  # disconnects while the job is still printing
    rest = read_events(api, job_id, last_event_id=first[-1].id)
    assert rest, "nothing after the 5th event"
    whole = read_events(api, job_id)  # replay from the start, after the job finished
    key = [(e.id, e.type, e.data) for e in whole]
    assert [(e.id, e.type, e.data) for e in first + rest] == key
    for n in (0, 3, len(whole) - 2):
        again = read_events(api, job_id, last_event_id=whole[n].id)
        assert [(e.id, e.type, e.data) for e in again] == key[n + 1 :]


def test_reconnecting_after_the_last_event_ends_at_once(api: httpx.Client) -> None:
    """A client that lost the connection right after `result` must not hang on the reconnect."""
    job_id = submit(api, "print(1)")
    whole = read_events(api, job_id)
    started = time.monotonic()
    try:
        after = read_events(api, job_id, last_event_id=whole[-1].id, timeout=5)
    except (StreamStillOpen, httpx.ReadTimeout):
        pytest.fail("the stream of a finished job stayed open after its last event")
    assert after == []
    assert time.monotonic() - started < 5


def test_a_cancelled_job_streams_its_end(api: httpx.Client) -> None:
    job_id = submit(api, "import time\ntime.sleep(30)\n", limits={"wall_time_s": 60, "cpu_time_s": 5})
    deadline = time.monotonic() + 30
    while api.get(f"/v1/jobs/{job_id}").json()["state"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 202
    events = read_events(api, job_id, timeout=30)
    assert summary(events)[-2:] == [("state", "cancelled"), ("result", "cancelled")]


def test_events_of_an_unknown_job_are_404(api: httpx.Client) -> None:
    response = api.get(f"/v1/jobs/{'a' * 32}/events")
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "id"


def test_events_of_a_malformed_id_are_422(api: httpx.Client) -> None:
    response = api.get("/v1/jobs/xyz/events")
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "id"
