"""What the compatibility facades add per request over /v1: the same small job, interleaved, medians.

Run on demand (root, `cellblock doctor` clean), never as part of the test suite::

    sudo .venv/bin/python bench/facade_overhead.py [--rounds 200] [--server URL]

Without ``--server`` it starts a private service (Redis, one worker, the API; the test suite's helpers) and
stops it afterwards. For each facade and each operation it times the facade's request and the native /v1
request doing the same thing, alternating which goes first every round, and prints the medians and the added
milliseconds (facade median − /v1 median). Target: at most 1 ms per request.

Operations (a facade may leave one out):

* ``submit``  create a job without waiting (the request path: validate, translate, store, queue)
* ``get``     read a finished job (store read, unseal, render)
* ``wait``    submit and wait for the result (end to end; dominated by the sandbox, so noisier)

Besides the latency, it reads the API process's own CPU time around each request (the sum over its threads
of /proc/PID/task/*/schedstat, in ns): what the facade adds to the API's work per request, free of the
sandbox's noise. For ``wait`` — where a run's ±5 ms swamps a 1 ms difference in the latency medians — the
target is checked on that CPU figure. (With ``--server``, pass ``--api-pid`` to get it.)

A facade is an entry of FACADES: add Piston's (``/api/v2/execute`` is its ``wait``) next to Judge0's.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

SOURCE = "print(input())\n"
V1_JOB = {"language": "python3", "files": [{"name": "main.py", "content": SOURCE}], "stdin": "hi"}
Op = Callable[[httpx.Client], None]


def v1_submit(api: httpx.Client) -> None:
    assert api.post("/v1/jobs", json=V1_JOB).status_code == 202


def v1_wait(api: httpx.Client) -> None:
    answer = api.post("/v1/jobs", params={"wait": "true"}, json=V1_JOB)
    assert answer.status_code == 200 and answer.json()["tests"][0]["run"]["stdout"] == "hi\n"


@dataclass
class Facade:
    name: str
    ops: dict[str, Op]
    native: dict[str, Op] = field(default_factory=dict)  # the /v1 request doing the same


def judge0(api: httpx.Client) -> Facade:
    body = {"source_code": SOURCE, "language_id": 71, "stdin": "hi"}
    done_v1 = api.post("/v1/jobs", params={"wait": "true"}, json=V1_JOB).json()["id"]
    done_j0 = api.post("/judge0/submissions", params={"wait": "true"}, json=body).json()["token"]

    def submit(client: httpx.Client) -> None:
        assert client.post("/judge0/submissions", json=body).status_code == 201

    def get(client: httpx.Client) -> None:
        assert client.get(f"/judge0/submissions/{done_j0}").json()["stdout"] == "hi\n"

    def wait(client: httpx.Client) -> None:
        answer = client.post("/judge0/submissions", params={"wait": "true"}, json=body)
        assert answer.status_code == 201 and answer.json()["stdout"] == "hi\n"

    def v1_get(client: httpx.Client) -> None:
        assert client.get(f"/v1/jobs/{done_v1}").json()["tests"][0]["run"]["stdout"] == "hi\n"

    return Facade("judge0", {"submit": submit, "get": get, "wait": wait},
                  {"submit": v1_submit, "get": v1_get, "wait": v1_wait})  # fmt: skip


def piston(api: httpx.Client) -> Facade:
    """Piston has no submit-only or get: /api/v2/execute is a `wait`; /api/v2/runtimes is timed against
    /v1/languages (both read the live workers) as its `list`."""
    body = {"language": "python", "version": "*", "files": [{"content": SOURCE}], "stdin": "hi"}

    def execute(client: httpx.Client) -> None:
        answer = client.post("/api/v2/execute", json=body)
        assert answer.status_code == 200 and answer.json()["run"]["stdout"] == "hi\n"

    def runtimes(client: httpx.Client) -> None:
        assert client.get("/api/v2/runtimes").status_code == 200

    def v1_languages(client: httpx.Client) -> None:
        assert client.get("/v1/languages").status_code == 200

    return Facade("piston", {"list": runtimes, "wait": execute}, {"list": v1_languages, "wait": v1_wait})


FACADES: list[Callable[[httpx.Client], Facade]] = [judge0, piston]


def api_cpu_ns(pid: int | None) -> int:
    """CPU time the API process has used so far, all its threads (0 when unknown)."""
    if pid is None:
        return 0
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


@dataclass
class Samples:
    ms: list[float] = field(default_factory=list)  # latency seen by the client
    cpu_ms: list[float] = field(default_factory=list)  # the API's CPU time for the request


def measure(api: httpx.Client, first: Op, second: Op, rounds: int, pid: int | None) -> tuple[Samples, Samples]:
    a, b = Samples(), Samples()
    for index in range(rounds):
        pair = ((first, a), (second, b)) if index % 2 == 0 else ((second, b), (first, a))
        for op, into in pair:
            cpu = api_cpu_ns(pid)
            start = time.perf_counter()
            op(api)
            into.ms.append((time.perf_counter() - start) * 1000)
            into.cpu_ms.append((api_cpu_ns(pid) - cpu) / 1e6)
    return a, b


@contextlib.contextmanager
def server(url: str | None, pid: int | None) -> Iterator[tuple[str, int | None]]:
    if url:
        yield url, pid
        return
    from tests.service.conftest import made_service

    with made_service() as svc:
        svc.start_worker()
        svc.start_api()
        svc.wait_ready()
        assert svc.api is not None
        yield svc.base_url, svc.api.pid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="pairs of requests per operation (wait: a fifth)")
    parser.add_argument("--server", help="an API already running (auth off)")
    parser.add_argument("--api-pid", type=int, help="with --server: the API's pid, for its CPU time")
    args = parser.parse_args()
    with server(args.server, args.api_pid) as (url, pid), httpx.Client(base_url=url, timeout=60) as api:
        print(f"{'facade':8} {'op':7} {'n':>5} {'/v1 ms':>9} {'facade ms':>10} {'added ms':>9}"
              f" {'API CPU /v1':>12} {'API CPU facade':>15} {'added CPU ms':>13}")  # fmt: skip
        worst = 0.0
        for make in FACADES:
            facade = make(api)
            for name, op in facade.ops.items():
                rounds = max(10, args.rounds // 5) if name == "wait" else args.rounds
                for _ in range(5):  # warm-up: connections, caches
                    op(api)
                    facade.native[name](api)
                ours, native = measure(api, op, facade.native[name], rounds, pid)
                added = statistics.median(ours.ms) - statistics.median(native.ms)
                cpu_native, cpu_ours = statistics.median(native.cpu_ms), statistics.median(ours.cpu_ms)
                worst = max(worst, cpu_ours - cpu_native if name == "wait" and pid else added)
                print(f"{facade.name:8} {name:7} {rounds:5d} {statistics.median(native.ms):9.2f} "
                      f"{statistics.median(ours.ms):10.2f} {added:+9.2f} {cpu_native:12.2f} {cpu_ours:15.2f} "
                      f"{cpu_ours - cpu_native:+13.2f}")  # fmt: skip
        print(f"largest added per request (latency; API CPU for wait): {worst:+.2f} ms (target <= 1 ms): "
              + ("ok" if worst <= 1.0 else "OVER"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
