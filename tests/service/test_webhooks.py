"""callback_url: the JobResult is POSTed to a receiver, retried with backoff, and never holds up a worker."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service, make_service

pytestmark = pytest.mark.sandbox


@dataclass
class Delivery:
    at: float
    path: str
    content_type: str
    body: bytes


@dataclass
class Receiver:
    """A local HTTP server that records every POST and answers with the next scripted status (then 200)."""

    statuses: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.deliveries.append(
                    Delivery(time.monotonic(), self.path, self.headers.get("content-type", ""), body)
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, count: int, timeout: float = 30) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"{len(self.deliveries)} deliveries after {timeout} s, wanted {count}"
            time.sleep(0.05)
        return self.deliveries


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """The usual module service, except that the webhook worker is killed outright at the end: a warm
    shutdown would wait for the deliveries to dead receivers to give up (minutes)."""
    svc = make_service()
    try:
        svc.start_worker()
        svc.start_webhooks()
        svc.start_api()
        svc.wait_ready()
        yield svc
    finally:
        svc.kill_group(svc.webhooks, signal.SIGKILL)
        svc.stop()
        shutil.rmtree(svc.root, ignore_errors=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A URL whose TCP connections are accepted by the kernel but never answered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


def job(source: str, **fields: Any) -> dict[str, Any]:
    return {"language": "python3", "files": [{"name": "main.py", "content": source}], **fields}


def test_the_callback_receives_the_job_result(api: httpx.Client, receiver: Receiver) -> None:
    result = api.post("/v1/jobs", params={"wait": "true"}, json=job("print('hook')", callback_url=receiver.url))
    assert result.status_code == 200, result.text
    delivered = receiver.wait_for(1)[0]
    assert delivered.path == "/hook"
    assert delivered.content_type.startswith("application/json")
    body = json.loads(delivered.body)
    assert body == result.json()
    assert body["verdict"] == "accepted" and body["tests"][0]["run"]["stdout"] == "hook\n"
    time.sleep(1.5)
    assert len(receiver.deliveries) == 1, "a result accepted by the receiver was sent again"


def test_a_failing_receiver_gets_the_result_on_the_third_try_with_backoff(
    api: httpx.Client, receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    job_id = api.post("/v1/jobs", json=job("print(3)", callback_url=receiver.url)).json()["id"]
    deliveries = receiver.wait_for(3, timeout=60)
    bodies = [json.loads(d.body) for d in deliveries]
    assert all(b["id"] == job_id and b["state"] == "done" for b in bodies)
    assert bodies[0] == bodies[1] == bodies[2]
    first_gap, second_gap = deliveries[1].at - deliveries[0].at, deliveries[2].at - deliveries[1].at
    assert first_gap >= 0.5, f"retried after {first_gap:.2f} s: no backoff"
    assert second_gap >= 1.5 * first_gap, f"gaps {first_gap:.2f} s then {second_gap:.2f} s: the delay did not grow"
    time.sleep(second_gap * 2 + 1)
    assert len(receiver.deliveries) == 3, "delivered again after the receiver accepted it"


def test_a_dead_receiver_never_blocks_jobs(api: httpx.Client, black_hole: str, receiver: Receiver) -> None:
    dead = [
        api.post("/v1/jobs", params={"wait": "true"}, json=job(f"print({i})", callback_url=black_hole))
        for i in range(3)
    ]
    assert all(r.status_code == 200 and r.json()["verdict"] == "accepted" for r in dead)
    # While those deliveries hang, jobs keep finishing at their usual pace ...
    started = time.monotonic()
    batch = api.post("/v1/batches", json={"jobs": [job(f"print({i})") for i in range(8)]}).json()
    while not api.get(f"/v1/batches/{batch['id']}").json()["done"]:
        assert time.monotonic() - started < 20, "jobs stopped finishing while a webhook receiver hangs"
        time.sleep(0.1)
    # ... and other receivers still get their results.
    live = api.post("/v1/jobs", params={"wait": "true"}, json=job("print('live')", callback_url=receiver.url))
    assert json.loads(receiver.wait_for(1, timeout=10)[0].body)["id"] == live.json()["id"]
    # No sandbox slot is held by a pending delivery (busy is refreshed by the heartbeat, every 2 s).
    deadline = time.monotonic() + 6
    while any(w["busy"] for w in api.get("/v1/workers").json()["workers"]):
        assert time.monotonic() < deadline, "worker slots stay busy while a webhook receiver hangs"
        time.sleep(0.2)


def test_many_dead_receivers_do_not_hold_up_other_deliveries(
    api: httpx.Client, black_hole: str, receiver: Receiver
) -> None:
    """Ten receivers that never answer (more than the delivery threads) must not delay a live one."""
    batch = api.post("/v1/batches", json={"jobs": [job(f"print({i})", callback_url=black_hole) for i in range(10)]})
    assert batch.status_code == 202, batch.text
    started = time.monotonic()
    while not api.get(f"/v1/batches/{batch.json()['id']}").json()["done"]:
        assert time.monotonic() - started < 30
        time.sleep(0.1)
    time.sleep(0.5)  # the ten deliveries are now hanging
    live = api.post("/v1/jobs", params={"wait": "true"}, json=job("print('live')", callback_url=receiver.url))
    finished = time.monotonic()
    delivered = receiver.wait_for(1, timeout=15)[0]
    assert json.loads(delivered.body)["id"] == live.json()["id"]
    delay = delivered.at - finished
    assert delay < 5, f"a live receiver waited {delay:.1f} s behind dead ones"


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1/hook", "file:///etc/passwd", "http://"])
def test_a_callback_url_that_is_not_http_is_refused(api: httpx.Client, url: str) -> None:
    response = api.post("/v1/jobs", json=job("print(1)", callback_url=url))
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["field"] == "callback_url"
