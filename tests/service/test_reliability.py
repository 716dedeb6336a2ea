"""Reliability of the service against real Redis, real RabbitMQ, real workers and real kills (issue 3, item 7;
issue 4, item 2).

Each test builds its own miniature cluster (`make_service()`: a private redis-server, `cellblock worker`
processes, the API) because it kills parts of it. Most tests run twice: with the Redis as the broker, and with
a private RabbitMQ node as the broker (`--broker amqp://…`; Redis then holds only state and events). One node
serves the whole module, each test on a virtual host of its own; the test that kills RabbitMQ starts its own.
What is killed, and what must still hold:

* the pool process running a job, 50 times → every job completes, each delivered exactly twice, and no
  process of a killed job's sandbox outlives it;
* a whole worker (its process group, and with it the sandbox) while a second worker runs → the job finishes
  on the second; the redelivery delay is printed (Redis: the lease's timeout + the sweep; RabbitMQ: the
  closed connection, at most 2 s as issue 4 demands);
* RabbitMQ: a frozen worker host (SIGSTOP: its TCP connection stays open and silent) → the job is redelivered
  when its heartbeats stop; the delay is printed;
* Redis: nothing: a job longer than the visibility timeout keeps its lease and runs once;
* redis-server (kill -9) with 200 queued jobs and no worker → restarted from its AOF, all 200 complete (with
  RabbitMQ the 200 messages wait in RabbitMQ while the job store dies);
* RabbitMQ (kill -9) with 200 confirmed jobs → restarted, the durable queue still holds all 200, they all
  complete, and the API accepts jobs again;
* the API, restarted twice during traffic (SIGTERM, then SIGKILL) → no job it answered 202 for is lost;
* a job whose worker dies every time (a poison pill) → failed after max_attempts, never delivered again.

Jobs are short Python programs tagged by an argument: the tag is in the argv of cellblock-launch, bwrap and
the program, so the test finds a job's sandbox under the worker's pool processes and kills the right one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cellblock.config import Settings
from cellblock.dispatch import make_celery
from tests.service.conftest import Service, make_service, wait_until
from tests.service.rabbitmq import RabbitMQ, running_rabbitmq

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

# argv: <tag> <seconds>. Prints its tag after sleeping, so a result proves which job ran to its end.
SLEEPER = "import sys, time\ntime.sleep(float(sys.argv[2]))\nprint(sys.argv[1])\n"
ECHO = "print(input())\n"
RABBITMQ_REDELIVERY_S = 2.0  # issue 4: "a dead worker host's job is redelivered within 2 s"


def sleeper(tag: str, seconds: float) -> dict[str, Any]:
    return {
        "language": "python3",
        "files": [{"name": "main.py", "content": SLEEPER}],
        "args": [tag, str(seconds)],
        "limits": {"wall_time_s": seconds + 10},
    }


def echo(text: str) -> dict[str, Any]:
    return {"language": "python3", "files": [{"name": "main.py", "content": ECHO}], "stdin": text}


# --- brokers --------------------------------------------------------------------------------------------------


@dataclass
class Broker:
    """What a test dispatches through: the service's own Redis, or a virtual host of a private RabbitMQ."""

    kind: str
    rabbit: RabbitMQ | None = None
    vhost: str = "/"

    @property
    def url(self) -> str | None:
        return self.rabbit.url(self.vhost) if self.rabbit else None

    def leftovers(self, svc: Service) -> tuple[int, int]:
        """(messages waiting in any language queue, messages delivered but not acked)."""
        if self.rabbit is not None:
            return self.rabbit.leftovers(self.vhost)
        client = svc.redis.client()
        queued = sum(int(client.llen(key)) for key in client.scan_iter("lang.*"))
        return queued, int(client.hlen("unacked"))


def fresh_vhost(node: RabbitMQ) -> Broker:
    vhost = f"test-{uuid.uuid4().hex[:8]}"
    node.add_vhost(vhost)
    return Broker("amqp", node, vhost)


@contextlib.contextmanager
def private_rabbitmq() -> Iterator[RabbitMQ]:
    directory = Path(tempfile.mkdtemp(prefix="cellblock-rabbitmq-", dir="/var/tmp"))
    try:
        with running_rabbitmq(directory) as node:
            yield node
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[RabbitMQ]:
    """One RabbitMQ node for the tests of this module that don't kill it (started only if one asks)."""
    with private_rabbitmq() as node:
        yield node


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest) -> Broker:
    if request.param == "redis":
        return Broker("redis")
    return fresh_vhost(request.getfixturevalue("rabbitmq"))


@contextlib.contextmanager
def cluster(tags: Iterable[str] = (), broker: Broker | None = None, **env: str) -> Iterator[Service]:
    """A private service; afterwards nothing of it is left, also not a sandbox orphaned by a kill."""
    svc = make_service(broker.url if broker else None, **env)
    try:
        yield svc
    except BaseException:
        print_worker_errors(svc)
        raise
    finally:
        svc.stop()
        describe_and_kill(tagged_processes({*tags, str(svc.root)}))
        shutil.rmtree(svc.root, ignore_errors=True)


def print_worker_errors(svc: Service, limit: int = 400) -> None:
    """A failing test shows what its workers logged at ERROR (each with the traceback under it) before the
    service's directory goes: "internal error while running the job" in a result is only the user's half of the
    story. Celery's WorkerLostError reports are left out: the kill tests cause them on purpose."""
    for path in sorted(svc.root.glob("worker-*.log")):
        blocks: list[list[str]] = []
        for line in path.read_text(errors="replace").splitlines():
            if line[:4].isdigit() and line[4:5] == "-":  # a new log record (timestamped)
                blocks.append([line])
            elif blocks:
                blocks[-1].append(line)  # its traceback
        shown = [line for block in blocks if " ERROR " in block[0] and "WorkerLostError" not in block[0]
                 for line in block]  # fmt: skip
        if shown:
            print(f"--- {path.name}: ERROR records")
            print("\n".join(shown[:limit]))


# --- processes -----------------------------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, bytes]]:
    """pid → (ppid, NUL-separated argv) of every live process."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        table[int(entry.name)] = (int(fields[1]), argv)
    return table


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


def argv_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def jobs_in_pool(worker_pid: int, tags: set[str]) -> dict[str, int]:
    """tag → the Celery pool process (a child of the worker's main process) whose sandbox runs that job.

    Walks only the worker's own tree (pool process → cellblock-launch/bwrap → …), a few /proc reads, so a kill
    can land within a millisecond of the sandbox's launch: also while bwrap is still setting it up. Deep enough for
    a warm slot's program too: bwrap → bwrap → helper (or the zygote's two levels) → the run's init → program.
    """
    found: dict[str, int] = {}
    for pool in children(worker_pid):
        frontier = children(pool)
        for _ in range(7):
            for pid in frontier:
                argv = argv_of(pid)
                for tag in tags:
                    if tag.encode() in argv:
                        found[tag] = pool
            frontier = [c for pid in frontier for c in children(pid)]
    return found


def tagged_processes(tags: set[str]) -> list[int]:
    table = process_table()
    return [pid for pid, (_, argv) in table.items() if any(t.encode() in argv for t in tags)]


def describe_and_kill(pids: list[int]) -> list[str]:
    """One line per process (for the failure message), then SIGKILL it: a test leaves nothing behind."""
    lines = []
    for pid in pids:
        with contextlib.suppress(OSError):
            status = dict(
                line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line
            )
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            memory = [line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":memory:" in line]
            lines.append(f"pid {pid} ppid {status['PPid']} uid {status['Uid'].split()[0]} nspid {status['NSpid']} "
                         f"{status['State']} {argv[0].decode()} cgroup {memory}")  # fmt: skip
            os.kill(pid, signal.SIGKILL)
    return lines


class Killer(threading.Thread):
    """SIGKILLs the pool process of each tagged job while it runs, up to `kills_per_job` times per job."""

    def __init__(self, worker_pids: set[int], tags: set[str], kills_per_job: int) -> None:
        super().__init__(daemon=True, name="killer")
        self.worker_pids = worker_pids
        self.tags = tags
        self.kills_per_job = kills_per_job
        self.kills: dict[str, list[float]] = {tag: [] for tag in tags}
        self.killed_pids: set[int] = set()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            wanted = {tag for tag in self.tags if len(self.kills[tag]) < self.kills_per_job}
            for worker_pid in self.worker_pids:
                for tag, pid in jobs_in_pool(worker_pid, wanted).items():
                    if pid in self.killed_pids:
                        continue
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    self.killed_pids.add(pid)
                    self.kills[tag].append(time.time())
            self.stopped.wait(0.001)

    def total(self) -> int:
        return sum(len(times) for times in self.kills.values())


# --- job store ------------------------------------------------------------------------------------------------


def wait_finished(svc: Service, job_ids: list[str], timeout: float) -> None:
    """Until every job is done, failed or cancelled (read straight from the job store: cheap for 200 jobs)."""
    client = svc.redis.client()

    def finished() -> bool:
        with client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(f"cb:job:{job_id}", "state")
            states = pipe.execute()
        return all(state in ("done", "failed", "cancelled") for state in states)

    wait_until(finished, timeout=timeout, interval=0.2, what=f"{len(job_ids)} jobs to finish")


def attempts(svc: Service, job_id: str) -> int:
    return int(svc.redis.client().hget(f"cb:job:{job_id}", "attempts") or 0)


def running_starts(svc: Service, job_id: str) -> list[tuple[float, str]]:
    """(epoch seconds, worker) of every 'running' event of a job: one per delivery that started it."""
    starts = []
    for entry_id, fields in svc.redis.client().xrange(f"cb:job:{job_id}:events"):
        if fields["type"] == "state":
            data = json.loads(fields["data"])
            if data["state"] == "running":
                starts.append((int(entry_id.split("-")[0]) / 1000, data.get("worker", "")))
    return starts


def assert_echoed(api: httpx.Client, job_id: str, expected: str) -> None:
    body = api.get(f"/v1/jobs/{job_id}").json()
    why = f"{body['state']} {body['verdict']}: {body.get('message')}; steps: {body.get('compile')} {body.get('tests')}"
    assert body["state"] == "done" and body["verdict"] == "accepted", why
    assert body["tests"][0]["run"]["stdout"] == expected + "\n", body


# --- the tests ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_on_one_of_two(svc: Service, tag: str, seconds: float) -> Iterator[tuple[httpx.Client, str, str, str]]:
    """With workers "first" and "second" started: the API, and a `sleeper` job whose sandbox runs on one of them.
    Yields (API client, job id, the worker running it, the other one)."""
    svc.start_api()
    svc.wait_ready(workers=2)
    with svc.client() as api:
        job_id = api.post("/v1/jobs", json=sleeper(tag, seconds)).json()["id"]
        wait_until(lambda: running_starts(svc, job_id), timeout=30, what="the job to start")
        victim = running_starts(svc, job_id)[0][1]
        wait_until(lambda: tagged_processes({tag}), timeout=10, what="the job's sandbox")
        yield api, job_id, victim, "second" if victim == "first" else "first"


def test_sigkill_of_the_process_running_a_job_50_times(broker: Broker) -> None:
    """Each of 50 jobs has its pool process SIGKILLed mid-run: all 50 finish, each after exactly 2 deliveries."""
    tags = [uuid.uuid4().hex for _ in range(50)]
    with cluster(tags, broker) as svc:
        worker = svc.start_worker(slots=2)
        svc.start_api()
        svc.wait_ready()
        killer = Killer({worker.pid}, set(tags), kills_per_job=1)
        killer.start()
        with svc.client() as api:
            started = time.monotonic()
            response = api.post("/v1/batches", json={"jobs": [sleeper(tag, 0.6) for tag in tags]})
            assert response.status_code == 202, response.text
            ids = response.json()["jobs"]
            try:
                wait_finished(svc, ids, timeout=240)
            finally:
                killer.stopped.set()
                killer.join()
            elapsed = time.monotonic() - started
            print(f"\n{broker.kind}: 50 pool processes SIGKILLed mid-job: all 50 jobs finished {elapsed:.1f} s "
                  "after submission")  # fmt: skip
            assert killer.total() == 50, {t: len(k) for t, k in killer.kills.items() if len(k) != 1}
            for job_id, tag in zip(ids, tags, strict=True):
                assert_echoed(api, job_id, tag)
                assert attempts(svc, job_id) == 2, job_id  # killed once, run once more; max_attempts is 3
        assert worker.poll() is None, "the worker itself died"
        orphans = describe_and_kill(tagged_processes(set(tags)))
        assert orphans == [], "a killed job's sandbox outlived its pool process"
        assert broker.leftovers(svc) == (0, 0)


def test_sigkill_of_a_whole_worker_redelivers_to_the_other(broker: Broker) -> None:
    """Kill every process of the worker running a job; the job finishes on the second worker. Prints the delay.

    With the Redis broker the job comes back when its lease (visibility_timeout_s, renewed while the worker
    lives) runs out and a live worker's sweep restores it: delay ≈ visibility_timeout_s + up to the 2 s sweep.
    Measured with the default 20 s: 20.0–21.9 s; this test uses 5 s to stay short. RabbitMQ requeues the job
    when the dead worker's connection closes, at once: the issue's 2 s is asserted.
    """
    transport = make_celery(Settings(visibility_timeout_s=5)).conf.broker_transport_options
    bound = transport["visibility_timeout"] + transport["unacked_restore_interval"]
    how = "closed AMQP connection"
    if broker.rabbit is None:
        how = f"visibility_timeout {transport['visibility_timeout']} s + sweep every "
        how += f"{transport['unacked_restore_interval']} s"
    tag = uuid.uuid4().hex
    with cluster([tag], broker, CELLBLOCK_VISIBILITY_TIMEOUT_S="5") as svc:
        procs = {"first": svc.start_worker(slots=1, name="first"), "second": svc.start_worker(slots=1, name="second")}
        with running_on_one_of_two(svc, tag, seconds=3) as (api, job_id, victim, survivor):
            sandbox = set(tagged_processes({tag}))  # the victim's; the survivor may start its own within seconds
            killed_at = time.time()
            svc.kill_group(procs[victim])
            wait_until(lambda: not sandbox & set(tagged_processes({tag})), timeout=5,
                       what="the killed worker's sandbox to die")  # fmt: skip
            wait_finished(svc, [job_id], timeout=bound + 60)
            delay = running_starts(svc, job_id)[-1][0] - killed_at
            print(f"\n{broker.kind}: whole worker killed: job restarted on {survivor} after {delay:.3f} s ({how})")
            body = api.get(f"/v1/jobs/{job_id}").json()
            assert body["state"] == "done" and body["verdict"] == "accepted", body
            assert body["worker"] == survivor and body["tests"][0]["run"]["stdout"] == tag + "\n"
            assert [w for _, w in running_starts(svc, job_id)] == [victim, survivor]
            assert attempts(svc, job_id) == 2
            if broker.rabbit is not None:
                assert delay <= RABBITMQ_REDELIVERY_S, f"redelivery took {delay:.3f} s"
            else:
                assert delay <= bound + 5, f"redelivery took {delay:.1f} s, expected ≤ {bound} s"
        assert procs[survivor].poll() is None
        assert broker.leftovers(svc) == (0, 0)


def test_a_frozen_worker_host_is_redelivered_after_its_heartbeats(rabbitmq: RabbitMQ) -> None:
    """RabbitMQ: SIGSTOP every process of the worker running a job, as if its host had vanished: its TCP
    connection stays open but falls silent, and RabbitMQ drops it after two to three missed heartbeats
    (broker_heartbeat_s); the job finishes on the second worker. Prints the delay."""
    broker = fresh_vhost(rabbitmq)
    heartbeat = Settings().broker_heartbeat_s
    tag = uuid.uuid4().hex
    with cluster([tag], broker) as svc:
        procs = {"first": svc.start_worker(slots=1, name="first"), "second": svc.start_worker(slots=1, name="second")}
        with running_on_one_of_two(svc, tag, seconds=2) as (api, job_id, victim, survivor):
            frozen_at = time.time()
            os.killpg(procs[victim].pid, signal.SIGSTOP)
            try:
                wait_until(lambda: len(running_starts(svc, job_id)) >= 2, timeout=30, what="the redelivery")
            finally:
                svc.kill_group(procs[victim])  # SIGKILL ends a stopped process too
            delay = running_starts(svc, job_id)[-1][0] - frozen_at
            print(f"\namqp: worker host frozen: job restarted on {survivor} after {delay:.3f} s "
                  f"(heartbeat {heartbeat} s)")  # fmt: skip
            wait_finished(svc, [job_id], timeout=60)
            body = api.get(f"/v1/jobs/{job_id}").json()
            assert body["state"] == "done" and body["worker"] == survivor, body
            assert [w for _, w in running_starts(svc, job_id)] == [victim, survivor]
            # RabbitMQ's own bound (rabbit_heartbeat: a connection silent for 2–3 intervals is closed), plus slack
            # for the redelivery; without heartbeats (or Celery's default 120 s) this takes minutes.
            assert delay <= 3 * heartbeat + 1.5, f"redelivery took {delay:.3f} s"
        assert broker.leftovers(svc) == (0, 0)


def test_a_job_longer_than_the_visibility_timeout_runs_once() -> None:
    """Redis broker only (RabbitMQ has no visibility timeout: it redelivers on a closed connection, never on age).
    With a 3 s visibility timeout, a 6 s job keeps its lease: the idle second worker never gets it too."""
    broker = Broker("redis")
    with cluster(broker=broker, CELLBLOCK_VISIBILITY_TIMEOUT_S="3") as svc:
        svc.start_worker(slots=1, name="first")
        svc.start_worker(slots=1, name="second")
        svc.start_api()
        svc.wait_ready(workers=2)
        tag = uuid.uuid4().hex
        with svc.client() as api:
            job_id = api.post("/v1/jobs", json=sleeper(tag, 6)).json()["id"]
            wait_finished(svc, [job_id], timeout=60)
            assert_echoed(api, job_id, tag)
        assert len(running_starts(svc, job_id)) == 1 and attempts(svc, job_id) == 1
        assert broker.leftovers(svc) == (0, 0)


def _submit_many(api: httpx.Client, count: int) -> tuple[list[str], list[str]]:
    """`count` echo jobs from 8 threads, each answered 202; returns (job ids, texts)."""
    texts = [f"job-{i}-{uuid.uuid4().hex[:8]}" for i in range(count)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda text: api.post("/v1/jobs", json=echo(text)), texts))
    assert [r.status_code for r in responses] == [202] * count, [r.text for r in responses if r.status_code != 202]
    return [r.json()["id"] for r in responses], texts


def test_redis_kill_9_with_200_queued_jobs(broker: Broker) -> None:
    """200 jobs accepted with no worker running; redis-server is SIGKILLed and restarted from its AOF; a worker
    started afterwards runs all 200. With RabbitMQ as the broker the job store dies while the 200 messages wait
    in RabbitMQ: they must still find their jobs, and run once each."""
    with cluster(broker=broker) as svc:
        svc.start_api()
        with svc.client() as api:
            ids, texts = _submit_many(api, 200)
            assert broker.leftovers(svc) == (200, 0)
            svc.redis.kill(signal.SIGKILL)  # right after the last 202: nothing may be lost
            svc.redis.start()
            assert broker.leftovers(svc) == (200, 0)
            svc.start_worker(slots=2)
            wait_finished(svc, ids, timeout=180)
            wait_until(lambda: api.get("/readyz").status_code == 200, timeout=20, what="the API to see Redis again")
            for job_id, text in zip(ids, texts, strict=True):
                assert_echoed(api, job_id, text)
                assert attempts(svc, job_id) == 1
        assert broker.leftovers(svc) == (0, 0)


def test_rabbitmq_kill_9_with_200_queued_jobs() -> None:
    """RabbitMQ as the broker: 200 jobs answered 202 (each publish confirmed by the broker), then RabbitMQ is
    SIGKILLed and restarted. Its durable queue still holds 200 persistent messages; the API accepts jobs again;
    a worker started afterwards runs all of them, once each."""
    with private_rabbitmq() as node:
        broker = Broker("amqp", node)
        with cluster(broker=broker) as svc:
            svc.start_api()
            with svc.client() as api:
                ids, texts = _submit_many(api, 200)
                assert broker.leftovers(svc) == (200, 0)
                node.kill()  # right after the last 202
                print(f"\nRabbitMQ restarted after kill -9 in {node.start():.1f} s")
                assert broker.leftovers(svc) == (200, 0)
                # The API's connections died with the broker; a refused submission says 503 and accepts nothing.
                late: list[str] = []
                refusals: list[int] = []

                def submit_late() -> bool:
                    response = api.post("/v1/jobs", json=echo("after the restart"))
                    if response.status_code == 202:
                        late.append(response.json()["id"])
                    else:
                        refusals.append(response.status_code)
                    return bool(late)

                wait_until(submit_late, timeout=30, interval=0.5, what="the API to publish again")
                print(f"first submission after the restart accepted after {len(refusals)} refusals")
                assert set(refusals) <= {503}, refusals
                svc.start_worker(slots=2)
                wait_finished(svc, [*ids, *late], timeout=180)
                for job_id, text in [*zip(ids, texts, strict=True), (late[0], "after the restart")]:
                    assert_echoed(api, job_id, text)
                    assert attempts(svc, job_id) == 1
            assert broker.leftovers(svc) == (0, 0)


def _submit_until(api_url: str, stop: threading.Event, accepted: list[tuple[str, str]], errors: list[str]) -> None:
    """A client that keeps submitting, retrying on connection errors as a real client would."""
    with httpx.Client(base_url=api_url, timeout=30) as client:
        while not stop.is_set():
            text = uuid.uuid4().hex
            try:
                response = client.post("/v1/jobs", json=echo(text))
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if response.status_code == 202:
                accepted.append((response.json()["id"], text))
            else:
                errors.append(f"{response.status_code}: {response.text[:200]}")
            time.sleep(0.02)


def test_api_restart_during_traffic_loses_no_accepted_job(broker: Broker) -> None:
    """Four clients submit without pause while the API is restarted twice (SIGTERM, then SIGKILL)."""
    with cluster(broker=broker) as svc:
        svc.start_worker(slots=2)
        svc.start_api()
        svc.wait_ready()
        stop = threading.Event()
        accepted: list[tuple[str, str]] = []
        errors: list[str] = []
        clients = [
            threading.Thread(target=_submit_until, args=(svc.base_url, stop, accepted, errors)) for _ in range(4)
        ]
        for thread in clients:
            thread.start()
        try:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                before = len(accepted)
                wait_until(lambda before=before: len(accepted) >= before + 20, timeout=30, what="traffic")
                svc.kill_group(svc.api, sig)
                svc.start_api()
            before = len(accepted)
            wait_until(lambda: len(accepted) >= before + 20, timeout=30, what="traffic after the restarts")
        finally:
            stop.set()
            for thread in clients:
                thread.join()
        print(f"\n{broker.kind}: API restarted twice during traffic: {len(accepted)} jobs accepted")
        assert errors == []
        ids = [job_id for job_id, _ in accepted]
        assert len(set(ids)) == len(ids)
        wait_finished(svc, ids, timeout=120)
        with svc.client() as api:
            for job_id, text in accepted:
                assert_echoed(api, job_id, text)
        wait_until(lambda: broker.leftovers(svc) == (0, 0), timeout=10, what="the queues to drain")


def test_a_poison_pill_fails_after_max_attempts(broker: Broker) -> None:
    """The pool process running the job is SIGKILLed every time; with max_attempts=2 the third delivery marks
    it failed with a clear message, and it is never delivered again."""
    tag = uuid.uuid4().hex
    with cluster([tag], broker, CELLBLOCK_MAX_ATTEMPTS="2") as svc:
        worker = svc.start_worker(slots=2)
        svc.start_api()
        svc.wait_ready()
        killer = Killer({worker.pid}, {tag}, kills_per_job=100)
        killer.start()
        with svc.client() as api:
            job_id = api.post("/v1/jobs", json=sleeper(tag, 30)).json()["id"]
            try:
                wait_finished(svc, [job_id], timeout=90)
            finally:
                killer.stopped.set()
                killer.join()
            body = api.get(f"/v1/jobs/{job_id}").json()
            assert body["state"] == "failed" and body["verdict"] == "internal_error", body
            assert "gave up after 2 attempts" in body["message"], body["message"]
            assert killer.total() == 2
            time.sleep(3)  # longer than the Redis broker's restore sweep: a redelivery would show now
            assert attempts(svc, job_id) == 3 and len(running_starts(svc, job_id)) == 2
            assert broker.leftovers(svc) == (0, 0)
            assert api.get(f"/v1/jobs/{job_id}").json()["state"] == "failed"
        assert worker.poll() is None


def test_the_backlog_is_counted_and_bounded_on_either_broker(broker: Broker) -> None:
    """No worker: accepted jobs wait in the broker. /v1/workers counts them per queue (in the job store, whichever
    the broker), and past CELLBLOCK_MAX_BACKLOG a submission is refused with 503 + Retry-After, nothing lost."""
    with cluster(broker=broker, CELLBLOCK_MAX_BACKLOG="5") as svc:
        svc.start_api()
        with svc.client() as api:
            ids = []
            for i in range(5):
                response = api.post("/v1/jobs", json=echo(f"waiting {i}"))
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            wait_until(lambda: api.get("/v1/workers").json()["backlog"]["lang.python3"] == 5, timeout=5,
                       what="the backlog to read 5")  # fmt: skip
            refused = api.post("/v1/jobs", json=echo("one too many"))
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "backlog_full", refused.text
            assert refused.headers["retry-after"] and broker.leftovers(svc) == (5, 0)
            svc.start_worker(slots=2)
            wait_finished(svc, ids, timeout=120)
            for i, job_id in enumerate(ids):
                assert_echoed(api, job_id, f"waiting {i}")
            wait_until(lambda: api.get("/v1/workers").json()["backlog"]["lang.python3"] == 0, timeout=5,
                       what="the backlog to drain")  # fmt: skip


# --- batches in bundles -------------------------------------------------------------------------------------------


def announce_worker(
    svc: Service, slots: int, features: tuple[str, ...] = ("bundles",), name: str = "announced"
) -> None:
    """A live worker's record with `slots` python3 slots, and no process behind it: the API sizes a batch's bundles
    against it, while nothing takes them from the queue. Without "bundles" in its features it is an older worker."""
    info = {"name": name, "host": "nowhere", "slots": slots, "languages": ["python3"], "queues": ["lang.python3"],
            "version": "0", "features": list(features), "started_at": "2026-01-01T00:00:00+00:00",
            "last_seen": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    client = svc.redis.client()
    client.set(f"cb:worker:{name}", json.dumps(info), ex=600)
    client.sadd("cb:workers", name)


def test_a_batch_travels_in_bundles_and_its_backlog_counts_jobs_on_either_broker(broker: Broker) -> None:
    """40 jobs against 2 live slots: bundles of 8 (2 per slot, bundle_max_jobs 8), so 5 messages in the broker,
    while the backlog says 40. One job of a bundle is cancelled while it waits: the backlog says 39, and when a
    real worker runs the bundles, that job stays cancelled (never started, no attempt) and every other one runs;
    nothing is left."""
    with cluster(broker=broker) as svc:
        svc.start_api()
        announce_worker(svc, slots=2)
        with svc.client() as api:
            texts = [f"bundled {i}" for i in range(40)]
            response = api.post("/v1/batches", json={"jobs": [echo(text) for text in texts]})
            assert response.status_code == 202, response.text
            ids = response.json()["jobs"]
            wait_until(lambda: broker.leftovers(svc) == (5, 0), timeout=10, what="5 messages in the queue")
            assert api.get("/v1/workers").json()["backlog"]["lang.python3"] == 40
            cancelled = ids[11]
            assert api.delete(f"/v1/jobs/{cancelled}").status_code == 202
            assert api.get("/v1/workers").json()["backlog"]["lang.python3"] == 39
            svc.start_worker(slots=2)
            wait_finished(svc, ids, timeout=120)
            for job_id, text in zip(ids, texts, strict=True):
                if job_id != cancelled:
                    assert_echoed(api, job_id, text)
            body = api.get(f"/v1/jobs/{cancelled}").json()
            assert body["state"] == "cancelled" and body["tests"] == [], body
            assert attempts(svc, cancelled) == 0 and running_starts(svc, cancelled) == []
            assert api.get("/v1/workers").json()["backlog"]["lang.python3"] == 0
            assert broker.leftovers(svc) == (0, 0)


def test_no_bundles_while_a_live_worker_of_the_language_takes_none() -> None:
    """A worker of an older version (no "bundles" in its features) would drop a bundle message: while one runs
    the language, a batch goes one job per message, whatever the other workers take."""
    with cluster() as svc:
        svc.start_api()
        announce_worker(svc, slots=2, name="current")
        announce_worker(svc, slots=2, features=(), name="older")
        with svc.client() as api:
            response = api.post("/v1/batches", json={"jobs": [echo(f"single {i}") for i in range(20)]})
            assert response.status_code == 202, response.text
            wait_until(lambda: Broker("redis").leftovers(svc) == (20, 0), timeout=10, what="20 messages")
            assert api.get("/v1/workers").json()["backlog"]["lang.python3"] == 20


def test_a_slot_hands_the_rest_of_a_long_bundle_back_to_the_queue_on_either_broker(broker: Broker) -> None:
    """One slot, 8 jobs of 0.3 s in bundles of 4 ([0-3] and [4-7]). A slot that has held a bundle for 0.25 s
    queues the rest again behind what waits, so the jobs start alternating between the two bundles, each bundle's
    in order: 0, 4, 1, 5, 2, 6, 3, 7 (or 4, 0, 5, 1, …, whichever message the API published first). Without the
    hand-back, each bundle would run through in one go."""
    with cluster(broker=broker) as svc:
        svc.start_worker(slots=1)
        svc.start_api()
        svc.wait_ready()
        with svc.client() as api:
            source = "import sys, time\ntime.sleep(0.3)\nprint(sys.stdin.read())\n"
            specs = [{**echo(f"long {i}"), "files": [{"name": "main.py", "content": source}]} for i in range(8)]
            response = api.post("/v1/batches", json={"jobs": specs})
            assert response.status_code == 202, response.text
            ids = response.json()["jobs"]
            wait_finished(svc, ids, timeout=120)
            jobs = [api.get(f"/v1/jobs/{job_id}").json() for job_id in ids]
            for i, job in enumerate(jobs):
                assert job["verdict"] == "accepted" and job["tests"][0]["run"]["stdout"] == f"long {i}\n", job
            started = sorted(range(8), key=lambda i: jobs[i]["started_at"])
            assert started in ([0, 4, 1, 5, 2, 6, 3, 7], [4, 0, 5, 1, 6, 2, 7, 3]), started
