"""`kill -USR2` on a service process writes every thread's stack to its log, and the process goes on.

What an operator does with a worker that stopped taking jobs: see where its main and pool processes wait,
without stopping them (cellblock.logs.dump_stacks_on_signal).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import Service, wait_until

pytestmark = pytest.mark.sandbox

HEADER = "(most recent call first)"  # faulthandler's line before each thread's frames


def children(pid: int) -> list[int]:
    """The main thread's children only — the pool processes — not test_reliability's `children` (every thread's):
    the worker's self-test threads start short-lived sandboxes of their own."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_sigusr2_dumps_the_stacks_of_a_worker_and_its_pool_processes_which_go_on(
    service: Service, api: httpx.Client
) -> None:
    worker = service.workers[0]
    # The fixture's worker has 2 slots: one pool process each (Celery starts them just after it is ready).
    wait_until(lambda: len(children(worker.pid)) == 2, timeout=30, what="the worker's two pool processes")
    pool = children(worker.pid)
    log = service.root / "worker-0.log"
    before = len(log.read_text(errors="replace"))
    for pid in (worker.pid, *pool):
        os.kill(pid, signal.SIGUSR2)
    wait_until(lambda: log.read_text(errors="replace")[before:].count("Current thread") >= 3, timeout=10,
               what="a stack dump from the worker's main process and each pool process")  # fmt: skip
    dumped = log.read_text(errors="replace")[before:]
    assert dumped.count(HEADER) >= 3 + 2, dumped  # the main process has more threads than its current one
    assert 'File "' in dumped and "celery" in dumped and "cellblock" in dumped, dumped
    assert worker.poll() is None and children(worker.pid) == pool, "a process died of the signal"
    job = {"language": "python3", "files": [{"name": "main.py", "content": "print(6 * 7)"}]}
    body = api.post("/v1/jobs", params={"wait": "true"}, json=job).json()
    assert body["verdict"] == "accepted" and body["tests"][0]["run"]["stdout"] == "42\n", body
