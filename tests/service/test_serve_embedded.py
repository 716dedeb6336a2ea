"""`cellblock serve` with nothing configured: the embedded launcher end to end (issue 3, item 1).

The real command, in its own data dir and on a free port: it must run jobs; on SIGTERM stop accepting, let a
running job finish within `shutdown_grace_s`, kill (and so requeue) one that runs longer, and leave no
process, cgroup, mount or socket behind; started again on the same data dir, it must run every job accepted
before: the one it killed and those still queued.

Jobs are Python programs tagged by an argument; the tag shows in bwrap's argv, next to the slot's /box path,
which tells the test which slots the service used (their cgroups are checked after it stops).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cellblock.config import Settings
from tests.service.conftest import free_port, wait_until
from tests.service.test_reliability import process_table  # zombies left out

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

GRACE_S = 8.0
# argv: <tag> <epoch>. Sleeps until <epoch> (so a rerun after a restart ends at once), then prints its tag.
UNTIL = "import sys, time\ntime.sleep(max(0.0, float(sys.argv[2]) - time.time()))\nprint(sys.argv[1])\n"


def until(tag: str, epoch: float) -> dict[str, Any]:
    return {
        "language": "python3",
        "files": [{"name": "main.py", "content": UNTIL}],
        "args": [tag, f"{epoch:.3f}"],
        "limits": {"wall_time_s": 40},
    }


@dataclass
class Shutdown:
    stopped_after_s: float = 0.0
    refused_after_s: float | None = None  # when the API stopped accepting
    accepted: dict[str, str] = field(default_factory=dict)  # tag → job id accepted after the SIGTERM


EMBEDDED_MAX_SLOTS = 16  # the sweep at stop walks this many slots (uids): the ranges below must not overlap


def embedded_first_uid() -> int:
    """61000 + 100 × the pytest-xdist worker's number (gw0, gw1, …): below the multihost tests' 62000 and 62100."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 61000 + 100 * int(worker.removeprefix("gw"))


class Embedded:
    """One `cellblock serve --port P` process tree over one data dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        # Slots of its own (lock dir, uids, cgroup subtree): what the test finds left in them after a stop is this
        # service's, never that of a worker another test killed on a machine-wide slot meanwhile. The uids must be
        # its own too, not only the lock dir: a slot's sweep kills every process of the slot's uid, so two of these
        # services at once (pytest -n 2 runs two of these tests side by side) on one uid range killed each other's
        # running jobs at their stops. One range per pytest-xdist worker; the tests of one worker run one by one.
        self.settings = Settings(slot_lock_dir=root / "slot-locks", first_uid=embedded_first_uid(),
                                 max_slots=EMBEDDED_MAX_SLOTS,
                                 cgroup_name=f"cellblock-embedded-{uuid.uuid4().hex[:8]}")  # fmt: skip
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(root),
                    "CELLBLOCK_DATA_DIR": str(self.data), "CELLBLOCK_SHUTDOWN_GRACE_S": str(GRACE_S),
                    "CELLBLOCK_SLOT_LOCK_DIR": str(self.settings.slot_lock_dir),
                    "CELLBLOCK_FIRST_UID": str(self.settings.first_uid),
                    "CELLBLOCK_MAX_SLOTS": str(self.settings.max_slots),
                    "CELLBLOCK_CGROUP_NAME": self.settings.cgroup_name}  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / f"serve-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        argv = [sys.executable, "-m", "cellblock", "serve", "--port", str(self.port), "--slots", "2"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        wait_until(lambda: httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200, timeout=90,
                   interval=0.2, what="cellblock serve to be ready")  # fmt: skip

    def terminate(self) -> Shutdown:
        """SIGTERM, as systemd or `kill` sends it, while a client keeps submitting until it is refused."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        shutdown = Shutdown()
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while self.proc.poll() is None and time.monotonic() - started < GRACE_S + 60:
                if shutdown.refused_after_s is None:
                    tag = uuid.uuid4().hex
                    try:
                        response = client.post("/v1/jobs", json=until(tag, 0))
                    except httpx.TransportError:
                        shutdown.refused_after_s = time.monotonic() - started
                    else:
                        assert response.status_code == 202, response.text
                        shutdown.accepted[tag] = response.json()["id"]
                time.sleep(0.05)
        self.proc.wait(10)
        shutdown.stopped_after_s = time.monotonic() - started
        return shutdown

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60)


# --- what the service leaves behind ---------------------------------------------------------------------------


def descendants(root_pid: int) -> dict[int, bytes]:
    table = process_table()
    found = {root_pid}
    grew = True
    while grew:
        new = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= new
        grew = bool(new)
    return {pid: table[pid][1] for pid in found if pid in table}


def processes_of(data_dir: Path) -> list[str]:
    """Every live process whose argv or environment names this data dir (redis-server, workers, API, bwrap)."""
    needle = str(data_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes()
            if needle in argv or needle in (entry / "environ").read_bytes():
                shown = argv.replace(b"\0", b" ")[:160].decode(errors="replace")
                found.append(f"{entry.name}: {shown}")
    return found


def kill_processes_of(data_dir: Path) -> None:
    for line in processes_of(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)


def slots_running(tags: set[str]) -> set[int]:
    """Slot indexes running the tagged jobs: fresh, the slot whose /box the job's bwrap binds; warm, the slot whose
    run cgroup holds the job's program (a warm slot's bwrap was started before the job and does not name it)."""
    slots = set()
    for pid, (_, argv) in process_table().items():
        if any(tag.encode() in argv for tag in tags):
            slots |= {int(m) for m in re.findall(rb"/slots/slot(\d+)/box", argv)}
            with contextlib.suppress(OSError):
                slots |= {int(m) for m in re.findall(r"/slot(\d+)/run", Path(f"/proc/{pid}/cgroup").read_text())}
    return slots


def cgroups_left(settings: Settings, slots: set[int]) -> list[str]:
    """Run cgroups under the given slots, looked at while holding each slot's lock (so no live run is seen)."""
    left: list[str] = []
    for index in sorted(slots):
        fd = os.open(settings.slot_lock_dir / f"slot{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Another test may hold the slot for a moment; it sweeps leftovers itself when it takes it.
            wait_until(lambda fd=fd: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) is None, timeout=30,
                       what=f"slot {index}'s lock")  # fmt: skip
            for parent in settings.cgroup_root.glob(f"*/{settings.cgroup_name}/slot{index}"):
                left += [str(p) for p in parent.glob("run*")]
        finally:
            os.close(fd)
    return left


def mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(path) in line]


def assert_nothing_left(svc: Embedded, tree: dict[int, bytes], slots: set[int]) -> None:
    table = process_table()
    survivors = [f"{pid}: {argv[:120]!r}" for pid, argv in tree.items() if table.get(pid, (0, b""))[1] == argv]
    assert survivors == [], "processes of the stopped service still run"
    assert processes_of(svc.data) == []
    assert not svc.data.joinpath("redis", "redis.sock").exists(), "the Redis socket file is left"
    assert mounts_under(svc.data) == []
    assert cgroups_left(svc.settings, slots) == []


@pytest.fixture
def embedded() -> Iterator[Embedded]:
    root = Path(tempfile.mkdtemp(prefix="cellblock-serve-", dir="/var/tmp"))
    root.chmod(0o711)
    svc = Embedded(root)
    try:
        yield svc
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                svc.proc.wait(GRACE_S + 30)
        kill_processes_of(svc.data)
        for subtree in svc.settings.cgroup_root.glob(f"*/{svc.settings.cgroup_name}"):  # its own, emptied by the sweep
            for slot in subtree.glob("slot*"):
                with contextlib.suppress(OSError):
                    slot.rmdir()
            with contextlib.suppress(OSError):
                subtree.rmdir()
        shutil.rmtree(root, ignore_errors=True)


def test_serve_runs_jobs_stops_clean_and_resumes_after_restart(embedded: Embedded) -> None:
    """Run → SIGTERM with two jobs running and three queued → nothing left → start again → every job done:
    the short one finished within the grace period (1 delivery), the long one was killed and ran again (2),
    the queued ones and those accepted while the API was stopping ran once."""
    embedded.start()
    with embedded.client() as api:
        hello = {"language": "c", "files": [{"name": "main.c", "content": '#include <stdio.h>\nint main(void)'
                                                                         '{ puts("hi"); return 0; }'}]}  # fmt: skip
        body = api.post("/v1/jobs", params={"wait": "true"}, json=hello).json()
        assert body["verdict"] == "accepted" and body["tests"][0]["run"]["stdout"] == "hi\n", body

        # Both slots busy: `short` ends within the grace period, `long` outlives it; three more wait in the queue.
        now = time.time()
        short, long = uuid.uuid4().hex, uuid.uuid4().hex
        ids = {tag: api.post("/v1/jobs", json=until(tag, at)).json()["id"]
               for tag, at in ((short, now + 6), (long, now + 18))}  # fmt: skip
        wait_until(lambda: len(slots_running({short, long})) == 2, timeout=30, what="both jobs to run")
        queued = [uuid.uuid4().hex for _ in range(3)]
        ids |= {tag: api.post("/v1/jobs", json=until(tag, 0)).json()["id"] for tag in queued}
        tree, slots = descendants(embedded.proc.pid), slots_running({short, long})  # type: ignore[union-attr]
        states = {tag: api.get(f"/v1/jobs/{job_id}").json()["state"] for tag, job_id in ids.items()}
        assert [states[t] for t in (short, long, *queued)] == ["running", "running", "queued", "queued", "queued"]

    shutdown = embedded.terminate()
    refused = "never" if shutdown.refused_after_s is None else f"{shutdown.refused_after_s:.2f} s"
    print(f"\ncellblock serve: SIGTERM → API refusing after {refused}, "
          f"{len(shutdown.accepted)} job(s) accepted meanwhile, stopped after {shutdown.stopped_after_s:.1f} s "
          f"(grace {GRACE_S} s)")  # fmt: skip
    assert embedded.proc is not None and embedded.proc.returncode == 0
    assert shutdown.refused_after_s is not None and shutdown.refused_after_s <= 5, "kept accepting jobs"
    assert shutdown.stopped_after_s <= GRACE_S + 5, f"took {shutdown.stopped_after_s:.1f} s to stop"
    assert_nothing_left(embedded, tree, slots)
    ids |= shutdown.accepted

    embedded.start()
    with embedded.client() as api:
        wait_until(lambda: all(api.get(f"/v1/jobs/{i}").json()["state"] == "done" for i in ids.values()),
                   timeout=60, interval=0.2, what="every job accepted before the restart")  # fmt: skip
        results = {tag: api.get(f"/v1/jobs/{job_id}").json() for tag, job_id in ids.items()}
        for tag, body in results.items():
            assert body["verdict"] == "accepted" and body["tests"][0]["run"]["stdout"] == tag + "\n", json.dumps(body)
        store = store_attempts(embedded, ids)
        assert store[short] == 1, "the short job did not finish within the grace period: it ran again"
        assert store[long] == 2 and all(store[tag] == 1 for tag in [*queued, *shutdown.accepted]), store
        assert "requeued 1 job" in embedded.root.joinpath("serve-2.log").read_text()
        tree = descendants(embedded.proc.pid)  # type: ignore[union-attr]
    assert embedded.terminate().stopped_after_s <= GRACE_S + 5
    assert_nothing_left(embedded, tree, slots)


def store_attempts(svc: Embedded, ids: dict[str, str]) -> dict[str, int]:
    """Deliveries per job, from the job store (the API does not show them), via the embedded Redis socket."""
    import redis

    client = redis.Redis(unix_socket_path=str(svc.data / "redis" / "redis.sock"), decode_responses=True)
    return {tag: int(client.hget(f"cb:job:{job_id}", "attempts") or 0) for tag, job_id in ids.items()}


def test_a_warm_service_stops_with_nothing_left(embedded: Embedded) -> None:
    """isolation=warm: each pool process keeps warm slots (a /box mount, a long-lived bwrap, a pre-warmed Python)
    between jobs; after SIGTERM none of them may outlive the service (pool processes end with os._exit, so this
    needs the worker's process-shutdown hook, not atexit)."""
    embedded.env["CELLBLOCK_ISOLATION"] = "warm"
    embedded.start()
    with embedded.client() as api:
        jobs = [{"language": "python3", "files": [{"name": "main.py", "content": "print(6 * 7)"}]},
                {"language": "c", "files": [{"name": "main.c", "content": '#include <stdio.h>\nint main(void)'
                                                                          '{ puts("42"); return 0; }'}]}]  # fmt: skip
        for job in jobs * 2:  # twice: with 2 slots, both pool processes may hold a warm slot
            body = api.post("/v1/jobs", params={"wait": "true"}, json=job).json()
            assert body["verdict"] == "accepted" and body["tests"][0]["run"]["stdout"] == "42\n", body
            assert body["tests"][0]["run"]["isolation"] in ("warm", "prewarmed"), body
        assert mounts_under(embedded.data) != [], "no warm /box is mounted: this test would prove nothing"
        tree = descendants(embedded.proc.pid)  # type: ignore[union-attr]
    assert embedded.terminate().stopped_after_s <= GRACE_S + 5
    # Zombies (empty argv) are left out: where pid 1 does not reap (this machine's init), a destroyed slot's inner
    # bwrap, orphaned when its outer process died first, stays one for good: not a process of ours that runs.
    assert_nothing_left(embedded, {pid: argv for pid, argv in tree.items() if argv}, {0, 1})
    settings = embedded.settings
    slot_cgroups = [str(p) for p in settings.cgroup_root.glob(f"*/{settings.cgroup_name}/slot*/*") if p.is_dir()]
    assert slot_cgroups == [], "cgroups of warm slots (or their runs) are left"
