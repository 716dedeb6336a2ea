"""DELETE /v1/jobs/{id}: cancel a queued job, kill a running sandbox, refuse what is finished or unknown."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service, assert_error

pytestmark = pytest.mark.sandbox

SPIN = "while True:\n    pass\n"
SLEEP = "import time\ntime.sleep({seconds})\nprint('woke')\n"
FIRST_SLOT_UID = 60000  # Settings.first_uid: slot k runs as first_uid + k


def submit(api: httpx.Client, source: str, **fields: Any) -> str:
    spec = {"language": "python3", "files": [{"name": "main.py", "content": source}], **fields}
    response = api.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def state_of(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_state(api: httpx.Client, job_id: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = state_of(api, job_id)
        if body["state"] in states:
            return body
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout} s")


def processes_with(marker: str) -> list[tuple[int, int, int]]:
    """(pid, uid, start time in clock ticks) of every process whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "cmdline").read_bytes():
                continue
            found.append((int(entry.name), *uid_and_start(entry)))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def uid_and_start(entry: Path) -> tuple[int, int]:
    uid = next(int(line.split()[1]) for line in (entry / "status").read_text().splitlines() if line.startswith("Uid:"))
    start = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[19])
    return uid, start


def is_zombie(entry: Path) -> bool:
    return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def boot_ticks() -> float:
    """Now, in the unit of /proc/<pid>/stat's start time: clock ticks since boot."""
    return float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK")


def live_processes_of_uid(uid: int, since: float, until: float) -> list[int]:
    """Pids of the live (not zombie) processes of `uid` started between two boot_ticks() readings."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                owner, start = uid_and_start(entry)
                if owner == uid and since <= start < until and not is_zombie(entry):
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, StopIteration):
                continue
    return found


def test_cancel_kills_a_running_sandbox_at_once(api: httpx.Client) -> None:
    marker = f"cancel-me-{uuid.uuid4().hex}"
    job_id = submit(api, SPIN, args=[marker], limits={"cpu_time_s": 20, "wall_time_s": 40})
    wait_for_state(api, job_id, {"running"})
    deadline = time.monotonic() + 20
    sandboxed: list[tuple[int, int, int]] = []
    while not sandboxed:
        assert time.monotonic() < deadline, "the program never appeared"
        sandboxed = [p for p in processes_with(marker) if p[1] >= FIRST_SLOT_UID]
        time.sleep(0.02)
    slot_uid = sandboxed[0][1]
    # The slot is ours from before its first process started until the job ends.
    slot_taken = min(start for _, _, start in processes_with(marker))
    time.sleep(0.5)  # let it burn some CPU: a cancel must not wait for the CPU limit
    asked, asked_tick = time.monotonic(), boot_ticks()
    response = api.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "cancelled" and response.json()["id"] == job_id
    result = wait_for_state(api, job_id, {"done", "failed", "cancelled"}, timeout=20)
    took = time.monotonic() - asked
    assert result["state"] == "cancelled", result
    assert took < 3, f"cancel took {took:.1f} s"
    assert processes_with(marker) == [], "the sandboxed program (or its bwrap) survived the cancel"
    # Only processes started while the slot was ours: it may already run another module's job.
    survivors = live_processes_of_uid(slot_uid, slot_taken, asked_tick)
    assert survivors == [], f"processes of slot uid {slot_uid} remain: {survivors}"
    # The slot is free again: new jobs run.
    again = api.post("/v1/jobs", params={"wait": "true"}, json={
        "language": "python3", "files": [{"name": "main.py", "content": "print('next')"}]})  # fmt: skip
    assert again.json()["verdict"] == "accepted"


def test_cancel_of_a_queued_job_means_it_never_runs(api: httpx.Client, service: Service) -> None:
    # The module's worker has 2 slots: occupy both, then queue a third job and cancel it.
    blockers = [submit(api, SLEEP.format(seconds=3), limits={"wall_time_s": 20}) for _ in range(2)]
    for blocker in blockers:
        wait_for_state(api, blocker, {"running"})
    queued = submit(api, "print('I ran')")
    assert state_of(api, queued)["state"] == "queued"
    response = api.delete(f"/v1/jobs/{queued}")
    assert response.status_code == 202, response.text
    assert response.json() == {"id": queued, "state": "cancelled", "url": f"/v1/jobs/{queued}"}
    assert state_of(api, queued)["state"] == "cancelled"
    for blocker in blockers:
        assert wait_for_state(api, blocker, {"done"})["verdict"] == "accepted"
    # Give the worker time to take the cancelled job off the queue; it must skip it.
    deadline = time.monotonic() + 10
    while sum(api.get("/v1/workers").json()["backlog"].values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    result = state_of(api, queued)
    assert result["state"] == "cancelled" and result["started_at"] is None and result["tests"] == []
    events = service.redis.client().xrange(f"cb:job:{queued}:events")
    assert '"running"' not in str(events), events


def test_cancel_of_a_finished_job_is_409_and_changes_nothing(api: httpx.Client) -> None:
    spec = {"language": "python3", "files": [{"name": "main.py", "content": "print(5)"}]}
    result = api.post("/v1/jobs", params={"wait": "true"}, json=spec).json()
    assert result["state"] == "done"
    error = assert_error(api.delete(f"/v1/jobs/{result['id']}"), 409, "id")
    assert "done" in error["message"] or "finished" in error["message"]
    assert api.get(f"/v1/jobs/{result['id']}").json() == result


def test_cancel_of_an_unknown_job_is_404(api: httpx.Client) -> None:
    assert_error(api.delete(f"/v1/jobs/{uuid.uuid4().hex}"), 404, "id")


@pytest.mark.parametrize("bad", ["nope", "1234", "G" * 32, "0" * 31, "0" * 33])
def test_cancel_of_a_malformed_id_is_422_naming_id(api: httpx.Client, bad: str) -> None:
    assert_error(api.delete(f"/v1/jobs/{bad}"), 422, "id")
