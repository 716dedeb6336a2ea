"""Cellblock on three hosts, one of them killed mid-batch (issue 4, item 1).

The hosts are network namespaces on a private bridge built by `netns.Network` (see its theory of operation):

    A  redis-server over TCP with a password (job store, and broker in the `redis` variant), a private
       RabbitMQ node as the broker in the `amqp` variant (`--broker amqp://…`), `cellblock serve` with an API key
    B  `cellblock worker` (2 slots), ruby made absent (its binary hidden in B's own mount namespace: `hide.py`)
    C  `cellblock worker` (2 slots) with every language
    T  the test's client: it talks to A over the bridge and to nothing else

Every host gets the same cluster key (`CELLBLOCK_CLUSTER_KEYS`): job traffic is sealed end to end. B and C
share one machine's slot space of their own (`slot_settings`), as two workers on one machine do.

What the test shows:
* routing — B advertises no ruby, C does; 20 ruby jobs all run on C while B sits idle next to them;
* spread and survival — 500 Python jobs, each echoing its own stdin, spread over B and C; once B has
  finished a fifth of them, at a moment when it runs a job's sandbox, every process of B's worker (its
  process group and every descendant, sandboxes included) is SIGKILLed; all 500 still finish, accepted, with
  their own input echoed, the jobs B was running among them finished on C;
* no duplicates reported to the client — a job's result is *reported* when it appears in its event stream
  (`GET /v1/jobs/{id}/events`, which a client follows and may resume with `Last-Event-ID`) or when a client
  polling `GET /v1/batches/{id}` first sees the job finished. At-least-once delivery may start a killed job
  twice (two `running` events are fine), but a client must be told one result: each stream holds exactly one
  `result` event (it is the last: resuming after it yields nothing), it equals `GET /v1/jobs/{id}`, and a
  poller of the batch never sees a finished job's result change (worker, finish time, output).
* the redelivery delay — from the kill to the `running` event on C of each job B was running — is printed,
  with the time, jobs per host and redelivered count. With the Redis broker it is the visibility timeout (5 s
  here, a lease live workers renew) plus up to the 2 s restore sweep; with RabbitMQ the dead host's closed
  connection, asserted within 2 s (issue 4, item 2).

Afterwards none of the test's namespaces, processes or cgroups remain, and the root namespace never had an
interface, address or route of the test (asserted).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography.fernet import Fernet

from cellblock.config import Settings
from tests.cluster.netns import Network, root_namespace_view
from tests.service.conftest import wait_until
from tests.service.rabbitmq import RabbitMQ, running_rabbitmq
from tests.service.test_reliability import argv_of, children, process_table

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CELLBLOCK = [sys.executable, "-m", "cellblock"]
VISIBILITY_TIMEOUT_S = 5
RESTORE_SWEEP_S = 2  # kombu's unacked_restore_interval (cellblock.dispatch)
RABBITMQ_REDELIVERY_S = 2.0  # issue 4: "a dead worker host's job is redelivered within 2 s"
REDIS_PORT = 16379  # inside host A's own namespace: no other Redis can be there
API_PORT = 8080
SLOTS = 2
ECHO = "print(input())\n"  # its argument is only a tag: it marks the job's sandbox processes
RUBY_ECHO = "puts STDIN.read\n"


@dataclass
class Cluster:
    net: Network
    slots: Settings  # the sandbox slots' own lock dir, uids and cgroup subtree (`slot_settings`)
    redis_url: str = ""
    api_url: str = ""
    key: str = ""  # an API key with scopes submit, read, admin
    workers: dict[str, Any] = field(default_factory=dict)  # host label → Popen of `cellblock worker`
    rabbit: RabbitMQ | None = None  # the broker when it is RabbitMQ (on host A), else Redis is
    cgroups_left: list[str] = field(default_factory=list)  # after the end: cgroups that could not be removed

    def name(self, label: str) -> str:
        """The worker name of host `label`."""
        return f"worker-{label}-{self.net.run_id}"

    def client(self, timeout: float = 30) -> httpx.Client:
        """An API client; create it inside `net.entered(net['T'])` (sockets keep the namespace they are made in)."""
        return httpx.Client(base_url=self.api_url, timeout=timeout, headers={"Authorization": f"Bearer {self.key}"})


def slot_settings(net: Network, broker: str) -> Settings:
    """Sandbox slots of this cluster's own (lock dir, uids, cgroup subtree), shared by B and C as slots are per
    machine: B dies holding a slot, and no other test should find that slot dirty. Each broker variant gets
    its own uid range, as the two may run at once under pytest -n 2 (60000+ is the default, 61000+ the
    embedded-serve test's)."""
    first_uid = {"redis": 62000, "amqp": 62100}[broker]
    return Settings(slot_lock_dir=net.root / "slot-locks", first_uid=first_uid, max_slots=8,
                    cgroup_name=f"cellblock-multihost-{net.run_id}")  # fmt: skip


def host_env(net: Network, label: str, slots: Settings, cluster_key: str, redis_url: str) -> dict[str, str]:
    home = net.root / label
    home.mkdir(mode=0o711, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(home),
        "CELLBLOCK_DATA_DIR": str(home / "data"), "CELLBLOCK_REDIS_URL": redis_url,
        "CELLBLOCK_CLUSTER_KEYS": cluster_key, "CELLBLOCK_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        "CELLBLOCK_SLOT_LOCK_DIR": str(slots.slot_lock_dir), "CELLBLOCK_FIRST_UID": str(slots.first_uid),
        "CELLBLOCK_MAX_SLOTS": str(slots.max_slots), "CELLBLOCK_CGROUP_NAME": slots.cgroup_name,
    }  # fmt: skip


def remove_cgroups(slots: Settings) -> list[str]:
    """Remove the cluster's cgroup subtree under every controller (its processes are gone); what is left."""
    left = []
    for subtree in slots.cgroup_root.glob(f"*/{slots.cgroup_name}"):
        for directory, _, _ in sorted(os.walk(subtree), key=lambda entry: -len(entry[0])):  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        if subtree.exists():
            left.append(str(subtree))
    return left


@contextlib.contextmanager
def three_hosts(hidden_on_b: list[str], broker: str) -> Iterator[Cluster]:
    """Hosts A, B, C and the client T: Redis (+ RabbitMQ when `broker` is "amqp") and the API on A, a worker on
    B and on C. Everything is stopped and removed afterwards, whatever happens."""
    net = Network(["A", "B", "C", "T"])
    cluster = Cluster(net=net, slots=slot_settings(net, broker))
    try:
        with contextlib.ExitStack() as stack:
            start_cluster(cluster, stack, hidden_on_b, broker)
            yield cluster
    except BaseException:
        with contextlib.suppress(Exception):  # a diagnosis: never in the way of the failure it explains
            dump_worker_stacks(cluster)
        print(net.log_tails(lines=80))
        raise
    finally:
        net.close()
        cluster.cgroups_left = remove_cgroups(cluster.slots)


def dump_worker_stacks(cluster: Cluster) -> None:
    """SIGUSR2 to every live process of each host's `cellblock worker` (main and pool): each writes every thread's
    stack to the host's log (cellblock.logs.dump_stacks_on_signal), so a worker that stalled shows where."""
    for proc in cluster.workers.values():
        if proc.poll() is not None:
            continue
        frontier = [proc.pid]
        while frontier:
            pid = frontier.pop()
            frontier += children(pid)
            if b"cellblock\x00worker" in argv_of(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR2)
    time.sleep(1)


def start_cluster(cluster: Cluster, stack: contextlib.ExitStack, hidden_on_b: list[str], broker: str) -> None:
    net, a = cluster.net, cluster.net["A"]
    password = secrets.token_hex(16)
    redis_url = f"redis://:{password}@{a.address}:{REDIS_PORT}/0"
    cluster_key = Fernet.generate_key().decode()
    env = {label: host_env(net, label, cluster.slots, cluster_key, redis_url) for label in ("A", "B", "C")}
    net.start(a, ["redis-server", "--bind", a.address, "--port", str(REDIS_PORT), "--requirepass", password,
                  "--dir", str(net.root / "A"), "--save", "", "--appendonly", "no"],
              env=env["A"], log="redis-server.log")  # fmt: skip
    with net.entered(net["T"]):
        wait_until(lambda: redis.Redis.from_url(redis_url, socket_timeout=1).ping(), what="redis on A")
    cluster.redis_url, cluster.api_url = redis_url, f"http://{a.address}:{API_PORT}"
    broker_args = []
    if broker == "amqp":
        (net.root / "rabbitmq").mkdir()
        cluster.rabbit = stack.enter_context(running_rabbitmq(net.root / "rabbitmq", host=a.address, wrap=a.argv([])))
        broker_args = ["--broker", cluster.rabbit.url()]
    cluster.key = net.run(a, [*CELLBLOCK, "keys", "create", "--redis", redis_url, "--name", "test",
                              "--scopes", "submit,read,admin"], env=env["A"]).strip()  # fmt: skip
    net.start(a, [*CELLBLOCK, "serve", "--redis", redis_url, *broker_args, "--host", a.address,
                  "--port", str(API_PORT)], env=env["A"], log="api.log", cwd=REPO)  # fmt: skip
    worker = [*CELLBLOCK, "worker", "--redis", redis_url, *broker_args, "--slots", str(SLOTS)]
    hide = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-m", "tests.cluster.hide"]
    cluster.workers["B"] = net.start(net["B"], [*hide, *hidden_on_b, "--", *worker, "--name", cluster.name("B")],
                                     env=env["B"], log="worker-B.log", cwd=REPO)  # fmt: skip
    cluster.workers["C"] = net.start(net["C"], [*worker, "--name", cluster.name("C")], env=env["C"],
                                     log="worker-C.log", cwd=REPO)  # fmt: skip


# --- reading the cluster through the API (from host T) -----------------------------------------------------


def workers(api: httpx.Client) -> dict[str, dict[str, Any]]:
    body = api.get("/v1/workers").json()
    return {w["name"]: w for w in body["workers"]}


def job(text: str, tag: str) -> dict[str, Any]:
    return {"language": "python3", "files": [{"name": "main.py", "content": ECHO}], "stdin": text, "args": [tag]}


def ruby_job(text: str) -> dict[str, Any]:
    return {"language": "ruby", "files": [{"name": "main.rb", "content": RUBY_ECHO}], "stdin": text}


def submit(api: httpx.Client, jobs: list[dict[str, Any]]) -> tuple[str, list[str]]:
    response = api.post("/v1/batches", json={"jobs": jobs})
    assert response.status_code == 202, response.text
    return response.json()["id"], response.json()["jobs"]


def sse(api: httpx.Client, job_id: str, after: str | None = None) -> list[tuple[str, str, Any]]:
    """(id, type, data) of every event of a job's stream, as a client reads it (resumed after `after`)."""
    headers = {"Last-Event-ID": after} if after else {}
    events: list[tuple[str, str, Any]] = []
    current: dict[str, str] = {}
    with api.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    events.append((current["id"], current["event"], json.loads(current["data"])))
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
    return events


def event_time(event_id: str) -> float:
    """Epoch seconds of a Redis stream entry id (`<ms>-<seq>`)."""
    return int(event_id.split("-", maxsplit=1)[0]) / 1000


def runs(events: list[tuple[str, str, Any]]) -> list[tuple[float, str]]:
    """(time, worker) of each `running` state event: one per delivery that started the job."""
    return [(event_time(i), d["worker"]) for i, kind, d in events if kind == "state" and d["state"] == "running"]


class BatchWatcher:
    """A client polling GET /v1/batches/{id}: records each job's result the first time it sees it finished,
    and every later poll whose result for that job differs (a second result reported to this client)."""

    def __init__(self, api: httpx.Client, batch_id: str) -> None:
        self.api, self.batch_id = api, batch_id
        self.first: dict[str, tuple[Any, ...]] = {}
        self.changed: list[str] = []
        self.polls = 0

    def poll(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.api.get(f"/v1/batches/{self.batch_id}").json()["jobs"]
        self.polls += 1
        for body in jobs:
            if body["state"] in ("done", "failed", "cancelled"):
                seen = (body["state"], body["worker"], body["finished_at"], json.dumps(body["tests"]))
                if self.first.setdefault(body["id"], seen) != seen:
                    self.changed.append(body["id"])
        return jobs


def broker_leftovers(cluster: Cluster) -> tuple[int, int]:
    """(messages waiting in a language queue, messages delivered but not acked) in the cluster's broker."""
    if cluster.rabbit is not None:
        return cluster.rabbit.leftovers()
    client = redis.Redis.from_url(cluster.redis_url)  # from host T, like every other client here
    return sum(int(client.llen(key)) for key in client.scan_iter("lang.*")), int(client.hlen("unacked"))


def tree(pid: int) -> dict[int, bytes]:
    """pid → argv of `pid` and every process under it, at any depth (a sandbox has a session of its own, so
    the process group alone would miss it). A few /proc reads along the tree, so it is quick."""
    found: dict[int, bytes] = {}
    frontier = [pid]
    while frontier:
        found.update((each, argv_of(each)) for each in frontier)
        frontier = [child for each in frontier for child in children(each) if child not in found]
    return found


def kill_everything_of(pid: int, tag: str, timeout: float = 30) -> tuple[float, dict[int, bytes]]:
    """At a moment when one of a worker's processes carries `tag` (a job's sandbox: the kill lands inside a
    running job), SIGKILL its process group and every descendant; wait until none is left.
    Returns when it was killed (epoch seconds) and what."""
    deadline = time.monotonic() + timeout
    processes = tree(pid)
    while not any(tag.encode() in argv for argv in processes.values()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no process of the worker carried {tag} within {timeout} s")
        time.sleep(0.001)
        processes = tree(pid)
    killed_at = time.time()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for each in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    wait_until(lambda: not (set(processes) & set(process_table())), timeout=10, what="the worker's processes to die")
    return killed_at, processes


# --- the test -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_three_hosts_routing_spread_and_a_worker_host_killed_mid_batch(broker: str) -> None:
    ruby = os.path.realpath(shutil.which("ruby") or "ruby not installed")  # the real binary, not its symlink
    started, root_before = time.monotonic(), root_namespace_view()
    with three_hosts(hidden_on_b=[ruby], broker=broker) as cluster:
        net, b, c = cluster.net, cluster.name("B"), cluster.name("C")
        assert root_namespace_view() == root_before, "the test's network showed up in the root namespace"
        with net.entered(net["T"]), cluster.client() as api:
            wait_until(lambda: {b, c} <= set(workers(api)), timeout=150, interval=0.5, what="workers on B and C")
            ready = time.monotonic() - started
            check_routing(api, b, c)
            report = kill_mid_batch(cluster, api, total=500)
        print(f"\n[{broker}] {net.labels} built, workers self-tested and ready in {ready:.1f} s; {report}")
    assert net.leftovers() == ([], []), "a namespace or a process of the test survived it"
    assert cluster.cgroups_left == [], "the cluster's cgroups outlived it"
    assert net.killed_at_close == [], f"processes outlived their process group: {net.killed_at_close}"
    print(f"whole test, hosts built to hosts removed: {time.monotonic() - started:.1f} s")


def check_routing(api: httpx.Client, b: str, c: str) -> None:
    """ruby exists only on C: B's worker does not advertise it, and every ruby job runs on C while B is idle."""
    info = workers(api)
    assert "ruby" not in info[b]["languages"] and "lang.ruby" not in info[b]["queues"], info[b]
    assert "ruby" in info[c]["languages"] and "python3" in info[b]["languages"], info
    languages = {lang["name"]: lang["workers"] for lang in api.get("/v1/languages").json()}
    assert languages["ruby"] == 1 and languages["python3"] == 2, languages
    texts = [f"ruby-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
    batch_id, ids = submit(api, [ruby_job(text) for text in texts])
    wait_until(lambda: api.get(f"/v1/batches/{batch_id}").json()["done"], timeout=60, interval=0.2, what="ruby jobs")
    for body, text in zip(api.get(f"/v1/batches/{batch_id}").json()["jobs"], texts, strict=True):
        assert body["state"] == "done" and body["verdict"] == "accepted", body
        assert body["worker"] == c and body["tests"][0]["run"]["stdout"] == text + "\n", body
    for job_id in ids:
        assert {worker for _, worker in runs(sse(api, job_id))} == {c}


@dataclass
class Kill:
    """What `kill_mid_batch` did: when, how many processes (how many of them a sandbox's), jobs done by then."""

    at: float  # epoch seconds
    processes: int
    sandbox_processes: int
    jobs_done: int


def kill_mid_batch(cluster: Cluster, api: httpx.Client, total: int) -> str:
    """The 500-job run (see the module docstring); returns the measurements as one line."""
    texts = [f"job-{i}-{uuid.uuid4().hex}" for i in range(total)]
    tag = f"{cluster.net.run_id}-job"  # in the argv of each job's sandbox processes (the worker's has `…-<run id>`)
    submitted = time.monotonic()
    batch_id, ids = submit(api, [job(text, tag) for text in texts])
    watcher = BatchWatcher(api, batch_id)
    kill = kill_b_mid_run(cluster, watcher, total, tag)

    def all_finished() -> bool:
        return len([j for j in watcher.poll() if j["state"] in ("done", "failed", "cancelled")]) == total

    wait_until(all_finished, timeout=180, interval=0.25, what=f"all {total} jobs to finish")
    elapsed = time.monotonic() - submitted
    # Nothing is left that a later redelivery could run again; then a few more polls, where a late second
    # result would show as a change.
    wait_until(lambda: broker_leftovers(cluster) == (0, 0), timeout=VISIBILITY_TIMEOUT_S + 10, interval=0.5,
               what="an empty broker")  # fmt: skip
    for _ in range(3):
        watcher.poll()
    assert cluster.workers["C"].poll() is None, "C's worker died"
    assert watcher.changed == [], f"a job's result was reported twice: {watcher.changed[:5]}"
    per_host, redelivered = check_each_job_reported_once(cluster, api, watcher, dict(zip(ids, texts, strict=True)),
                                                         kill.at)  # fmt: skip
    if cluster.rabbit is not None:  # issue 4: RabbitMQ redelivers a dead worker host's job within 2 s
        assert max(redelivered) <= RABBITMQ_REDELIVERY_S, redelivered
    why = "closed connection" if cluster.rabbit else f"visibility timeout {VISIBILITY_TIMEOUT_S} s + sweep"
    return (f"{total} jobs in {elapsed:.1f} s ({total / elapsed:.0f}/s); {kill.jobs_done} done when every one of "
            f"B's {kill.processes} processes ({kill.sandbox_processes} of a sandbox) was killed; per host "
            f"{dict(per_host)}; {len(redelivered)} jobs B was running redelivered to C after "
            f"{min(redelivered):.2f}–{max(redelivered):.2f} s ({why}); batch polled {watcher.polls} times, "
            "0 results reported twice")  # fmt: skip


def kill_b_mid_run(cluster: Cluster, watcher: BatchWatcher, total: int, tag: str) -> Kill:
    """Once B has finished a fifth of the batch, and at a moment when it runs a job's sandbox, SIGKILL every
    process of B's worker (sandboxes included); nothing runs on host B afterwards."""
    b, b_pid = cluster.name("B"), cluster.workers["B"].pid

    def b_finished_some() -> bool:
        return sum(1 for j in watcher.poll() if j["state"] == "done" and j["worker"] == b) >= total // 5

    wait_until(b_finished_some, timeout=120, interval=0.1, what=f"B to finish {total // 5} jobs")
    at, killed = kill_everything_of(b_pid, tag)
    assert cluster.net.processes(cluster.net["B"]) == [], "a process is still running on host B"
    sandbox = sum(1 for argv in killed.values() if tag.encode() in argv)
    return Kill(at=at, processes=len(killed), sandbox_processes=sandbox, jobs_done=len(watcher.first))


def check_each_job_reported_once(
    cluster: Cluster, api: httpx.Client, watcher: BatchWatcher, texts: dict[str, str], killed_at: float
) -> tuple[Counter[str], list[float]]:
    """Every job done, accepted, its own input echoed, one result in its stream (the last event, and nothing
    after it when resumed); returns the jobs per worker and the redelivery delays of the jobs B was running."""
    b, c = cluster.name("B"), cluster.name("C")
    final = {body["id"]: body for body in watcher.poll()}
    with ThreadPoolExecutor(8) as pool:  # threads started here are inside T's namespace too
        streams = dict(zip(texts, pool.map(lambda job_id: sse(api, job_id), texts), strict=True))
        resumed = list(pool.map(lambda job_id: sse(api, job_id, after=streams[job_id][-1][0]), texts))
    assert resumed == [[]] * len(texts), "a stream went on after its result"
    per_host: Counter[str] = Counter()
    redelivered: list[float] = []
    for job_id, text in texts.items():
        body, events = final[job_id], streams[job_id]
        assert body["state"] == "done" and body["verdict"] == "accepted", body
        assert body["tests"][0]["run"]["stdout"] == text + "\n", body  # the job's own input: the right job ran
        results = [data for _, kind, data in events if kind == "result"]
        assert len(results) == 1 and events[-1][1] == "result", [kind for _, kind, _ in events]
        assert results[0]["worker"] == body["worker"] and results[0]["tests"] == body["tests"]
        per_host[body["worker"]] += 1
        starts = [worker for _, worker in runs(events)]
        if b in starts and body["worker"] == c:  # B was running it when killed: started again on C
            assert starts == [b, c], starts
            redelivered.append(runs(events)[-1][0] - killed_at)
        else:  # run once; a redelivery of a job B had finished (but not acked) is skipped, never started
            assert len(starts) == 1, starts
    assert set(per_host) == {b, c} and sum(per_host.values()) == len(texts), per_host
    assert redelivered, "B was running no job when it was killed"
    return per_host, redelivered
