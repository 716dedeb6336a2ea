"""Piston's WebSocket /api/v2/connect (issue 5, item 2) against a real API + worker + sandbox.

Live stdin (and our end-of-input), output as produced, signals that really reach the program (unlike upstream),
the stage/exit messages, Piston's close codes 4000-4005 and 4999, and — exploit style — that a signal only
reaches the program's own processes and that one job's input never reaches another job.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.service.conftest import Service

pytestmark = pytest.mark.sandbox

ECHO = """import sys
for line in sys.stdin:
    print(line.strip().upper(), flush=True)
print("bye", flush=True)
"""
SIGNALLED = """import os, signal, sys, time
def handler(number, frame):
    os.write(1, f"pid {os.getpid() == main} got {signal.Signals(number).name}\\n".encode())  # one write: no mixing
main = os.getpid()
signal.signal(signal.SIGUSR1, handler)
child = os.fork()
if child:  # the parent alone says it (the child has the handler from the fork); two "ready" lines raced the check
    print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture(scope="module")
def svc(service: Service) -> Service:
    """The shared module service (conftest: Redis, a 2-slot worker, webhooks, the API)."""
    return service


def open_ws(svc: Service) -> ClientConnection:
    return connect(svc.base_url.replace("http://", "ws://") + "/api/v2/connect", open_timeout=10)


def init(ws: ClientConnection, source: str, language: str = "python", **fields: Any) -> None:
    ws.send(json.dumps({"type": "init", "language": language, "version": "*",
                        "files": [{"content": source}], "run_timeout": 20000, **fields}))  # fmt: skip


def until(ws: ClientConnection, want: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """Messages up to and including the first for which want(message) is true."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        seen.append(message)
        if want(message):
            return seen


def stdout_of(messages: list[dict[str, Any]]) -> str:
    return "".join(m["data"] for m in messages if m["type"] == "data" and m["stream"] == "stdout")


def closed_with(ws: ClientConnection, timeout: float = 30) -> tuple[int | None, list[dict[str, Any]]]:
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout=timeout)))
    except ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else None), messages


def test_interactive_stdin_output_and_end_of_input(svc: Service) -> None:
    with open_ws(svc) as ws:
        init(ws, ECHO)
        runtime = json.loads(ws.recv(timeout=10))
        assert runtime["type"] == "runtime" and runtime["language"] == "python" and runtime["version"].startswith("3")
        assert until(ws, lambda m: m["type"] == "stage")[-1] == {"type": "stage", "stage": "run"}
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "hello\n"}))
        assert stdout_of(until(ws, lambda m: m["type"] == "data")) == "HELLO\n"  # answered while it still runs
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "again\n"}))
        assert stdout_of(until(ws, lambda m: m["type"] == "data")) == "AGAIN\n"
        ws.send(json.dumps({"type": "eof"}))
        code, messages = closed_with(ws)
    assert code == 4999 and stdout_of(messages) == "bye\n"
    exits = [m for m in messages if m["type"] == "exit"]
    assert exits == [{"type": "exit", "stage": "run", "code": 0, "signal": None, "status": None, "message": None,
                      "error": None}]  # fmt: skip


def test_compiled_program_has_both_stages(svc: Service) -> None:
    source = '#include <stdio.h>\nint main(){char s[64]; if(scanf("%63s", s)==1) printf("got %s\\n", s); return 7;}'
    with open_ws(svc) as ws:
        init(ws, source, language="c")
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "early\n"}))  # before the run: kept for it
        ws.send(json.dumps({"type": "eof"}))
        code, messages = closed_with(ws)
    assert code == 4999
    kinds = [(m["type"], m.get("stage")) for m in messages if m["type"] in ("stage", "exit")]
    assert kinds == [("stage", "compile"), ("exit", "compile"), ("stage", "run"), ("exit", "run")]
    assert stdout_of(messages) == "got early\n"
    run_exit = messages[-1]
    assert (run_exit["code"], run_exit["status"]) == (7, "RE")


def test_signals_reach_the_programs_processes(svc: Service) -> None:
    with open_ws(svc) as ws:
        init(ws, SIGNALLED)
        until(ws, lambda m: m["type"] == "data" and "ready" in m["data"])
        ws.send(json.dumps({"type": "signal", "signal": "SIGUSR1"}))
        text = ""
        while text.count("got") < 2:
            text += stdout_of(until(ws, lambda m: m["type"] == "data"))
        assert sorted(text.splitlines()) == ["pid False got SIGUSR1", "pid True got SIGUSR1"]  # parent and child
        ws.send(json.dumps({"type": "signal", "signal": "SIGTERM"}))
        code, messages = closed_with(ws)
    assert code == 4999
    run_exit = [m for m in messages if m["type"] == "exit"][-1]
    assert (run_exit["code"], run_exit["signal"], run_exit["status"]) == (None, "SIGTERM", "SG")


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        ([{"type": "data", "stream": "stdin", "data": "x"}], 4003),
        ([{"type": "signal", "signal": "SIGINT"}], 4003),
        ([], 4001),
        (["init", {"type": "signal", "signal": "SIGNOPE"}], 4005),
        (["init", {"type": "data", "stream": "stdout", "data": "x"}], 4004),
        (["init", "init"], 4000),
    ],
    ids=["data-before-init", "signal-before-init", "no-init", "bad-signal", "write-stdout", "init-twice"],
)
def test_protocol_errors_close_with_pistons_codes(svc: Service, messages: list[Any], code: int) -> None:
    with open_ws(svc) as ws:
        for index, message in enumerate(messages):
            if message == "init":
                init(ws, "import time\ntime.sleep(10)")
                if index == 0:
                    until(ws, lambda m: m["type"] == "stage")
            else:
                ws.send(json.dumps(message))
        got, _ = closed_with(ws)
    assert got == code


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ('{"type": "init", "language": "swift", "version": "*", "files": [{"content": "x"}]}',
         "swift-* runtime is unknown"),
        ('{"type": "init", "language": "python", "version": "*"}', "files is required as an array"),
        ("not json", "the message is not valid JSON"),
    ],
)  # fmt: skip
def test_bad_init_is_an_error_then_4002(svc: Service, message: str, error: str) -> None:
    with open_ws(svc) as ws:
        ws.send(message)
        code, messages = closed_with(ws)
    assert code == 4002 and messages == [{"type": "error", "message": error}]


def test_exploit_input_and_signals_stay_inside_their_own_job(svc: Service) -> None:
    """Attack: reach another job through the live-input path. Job A's stdin and signals must not reach job B
    (its neighbour on the same worker), nor any host process; entries written straight into B's input stream
    without the cluster key, or A's sealed entries replayed into B's stream, must be ignored."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        with open_ws(svc) as a, open_ws(svc) as b:
            init(a, SIGNALLED)
            init(b, ECHO)
            until(a, lambda m: m["type"] == "data" and "ready" in m["data"])
            until(b, lambda m: m["type"] == "stage")
            store = svc.redis.client()
            jobs = sorted(k.split(":")[2] for k in store.keys("cb:job:*") if k.count(":") == 2)
            running = [j for j in jobs if store.hget(f"cb:job:{j}", "state") == "running"]
            a.send(json.dumps({"type": "data", "stream": "stdin", "data": "for a only\n"}))
            a.send(json.dumps({"type": "signal", "signal": "SIGUSR1"}))
            until(a, lambda m: m["type"] == "data" and "got SIGUSR1" in m["data"])
            a_stream = next(k for k in store.keys("cb:job:*:input"))
            a_id = a_stream.split(":")[2]
            for job_id in running:
                if job_id != a_id:  # B: a forged entry, and A's sealed entries replayed into B's stream
                    store.xadd(f"cb:job:{job_id}:input", {"data": '{"kind":"stdin","data":"forged\\n"}'})
                    for _, fields in store.xrange(a_stream):
                        store.xadd(f"cb:job:{job_id}:input", fields)
            b.send(json.dumps({"type": "data", "stream": "stdin", "data": "mine\n"}))
            b.send(json.dumps({"type": "eof"}))
            code, messages = closed_with(b)
            assert code == 4999 and stdout_of(messages) == "MINE\nbye\n"
            a.send(json.dumps({"type": "signal", "signal": "SIGKILL"}))
            code, _ = closed_with(a)
            assert code == 4999
        assert bystander.poll() is None, "a host process was signalled"
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()
