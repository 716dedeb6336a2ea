"""What the service path costs: HTTP API → Redis → Celery worker → engine → sandbox, against the sandbox alone
(the same `Engine` in this process) and a bare ``subprocess``, all measured in the same run.

Run on demand (root, `cellblock doctor` clean, gcc/g++/python3 installed), never as part of the test suite::

    sudo .venv/bin/python bench/api_overhead.py [--runs 60] [--jobs 300] [--reps 5] [--server URL]

Without ``--server`` it starts the embedded service (``cellblock serve --port P --slots <cores>``) in a temporary
data dir and stops it at the end. Workloads:

* ``c``      C hello world: compile (gcc, the flags of c.toml) + one run
* ``py``     Python ``print(1)``
* ``cpp100`` one C++ program (a+b) with 100 test cases in one job, and the same job with 1 test case

Paths, interleaved round-robin (the order rotates every round, so background noise hits all alike):

* ``api``      ``POST /v1/jobs?wait=true`` through an ``httpx.Client`` (keep-alive), answer checked
* ``sandbox``  ``Engine.run(JobSpec)`` in this process: the same engine and sandbox the worker runs
* ``bare``     the same compile/run steps with ``subprocess.run``, no sandbox

Throughput (small jobs): ``--jobs`` jobs through the API as one ``POST /v1/batches`` (until the last result is
stored) and as ``wait=true`` calls from 2 × slots client threads; the sandbox alone and bare with one process
per slot, all started together. See bench/README.md for what it prints and the targets it checks.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from cellblock.config import Settings
from cellblock.engine import Engine
from cellblock.languages.registry import Registry
from cellblock.models import JobResult, JobSpec, Verdict
from cellblock.sandbox.host import SandboxHost

HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
PRINT_PY = "print(1)\n"
APLUSB_CPP = "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }\n"
C_COMPILE = ["gcc", "-std=gnu17", "-O2", "-pipe", "-o", "main", "main.c", "-lm"]  # as c.toml
CPP_COMPILE = ["g++", "-std=gnu++17", "-O2", "-pipe", "-o", "main", "main.cpp", "-lm"]  # as cpp.toml
# Bare runs see the toolchains the sandbox sees (/usr, not a pyenv shim earlier in the caller's PATH).
TOOL_PATH = "/usr/local/bin:/usr/bin:/bin"
BARE_ENV = {"PATH": TOOL_PATH, "LANG": "C.UTF-8"}
TARGET_LATENCY_MS = 10.0  # wait=true p50 ≤ sandbox-alone p50 + this
TARGET_THROUGHPUT = 0.7  # API runs/s ≥ this × sandbox-alone runs/s
TARGET_PER_TEST = 1.10  # API per-test cost ≤ this × sandbox-alone per-test cost


@dataclass(frozen=True)
class Workload:
    name: str
    spec: dict[str, Any]
    expected: list[str]  # stdout of each test

    @property
    def job(self) -> JobSpec:
        return JobSpec.model_validate(self.spec)


def tests_for(count: int) -> list[dict[str, str]]:
    return [{"stdin": f"{i} {i * 7}\n", "expected_output": f"{i * 8}\n"} for i in range(count)]


def workloads() -> dict[str, Workload]:
    cpp = {"language": "cpp", "files": [{"name": "main.cpp", "content": APLUSB_CPP}]}
    return {
        "c": Workload("c", {"language": "c", "files": [{"name": "main.c", "content": HELLO_C}]}, ["hello\n"]),
        "py": Workload("py", {"language": "python3", "files": [{"name": "main.py", "content": PRINT_PY}]}, ["1\n"]),
        "cpp100": Workload("cpp100", {**cpp, "tests": tests_for(100)}, [t["expected_output"] for t in tests_for(100)]),
        "cpp1": Workload("cpp1", {**cpp, "tests": tests_for(1)}, [t["expected_output"] for t in tests_for(1)]),
    }


def check(result: JobResult, workload: Workload) -> None:
    outputs = [t.run.stdout if t.run else None for t in result.tests]
    if result.verdict != Verdict.ACCEPTED or outputs != workload.expected:
        raise RuntimeError(f"{workload.name}: unexpected result {result.model_dump_json()[:400]}")
    if workload.name.startswith("cpp") and result.compile is None:
        raise RuntimeError(f"{workload.name}: no compile step in the result")


# --- the three paths ------------------------------------------------------------------------------------------


class ApiPath:
    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=300)

    def run(self, workload: Workload) -> JobResult:
        response = self.client.post("/v1/jobs", params={"wait": "true"}, json=workload.spec)
        if response.status_code != 200:
            raise RuntimeError(f"API answered {response.status_code}: {response.text[:300]}")
        return JobResult.model_validate_json(response.content)


class SandboxPath:
    def __init__(self, data_dir: Path) -> None:
        settings = Settings(data_dir=data_dir)
        self.engine = Engine(settings, Registry.load(), SandboxHost(settings))

    def run(self, workload: Workload) -> JobResult:
        return self.engine.run(workload.job)


class BarePath:
    """The job's steps with subprocess.run in a scratch dir: the floor without any sandbox."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.last_compile_s = 0.0

    def _run(self, argv: list[str], stdin: bytes = b"") -> bytes:
        program = shutil.which(argv[0], path=TOOL_PATH) if "/" not in argv[0] else argv[0]
        done = subprocess.run([program or argv[0], *argv[1:]], cwd=self.dir, input=stdin, capture_output=True,
                              check=True, env=BARE_ENV)  # fmt: skip
        return done.stdout

    def run(self, workload: Workload) -> list[str]:
        source = workload.spec["files"][0]
        (self.dir / source["name"]).write_text(source["content"])
        language = workload.spec["language"]
        if language == "python3":
            return [self._run(["python3", "-B", "main.py"]).decode()]
        started = time.perf_counter()
        self._run(C_COMPILE if language == "c" else CPP_COMPILE)
        self.last_compile_s = time.perf_counter() - started
        tests = workload.spec.get("tests") or [{"stdin": ""}]
        return [self._run(["./main"], t["stdin"].encode()).decode() for t in tests]


def timed(path: Any, workload: Workload) -> tuple[float, Any]:
    started = time.perf_counter()
    out = path.run(workload)
    elapsed = time.perf_counter() - started
    if isinstance(out, JobResult):
        check(out, workload)
    elif out != workload.expected:
        raise RuntimeError(f"{workload.name}: bare run printed {out[:3]!r}")
    return elapsed, out


# --- statistics -----------------------------------------------------------------------------------------------


@dataclass
class Summary:
    p50_ms: float
    p95_ms: float
    runs_per_s: float
    n: int


def summarize(seconds: list[float]) -> Summary:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return Summary(statistics.median(ordered) * 1e3, p95 * 1e3, len(ordered) / sum(ordered), len(ordered))


def rotated(items: tuple[str, ...], k: int) -> list[str]:
    k %= len(items)
    return list(items[k:] + items[:k])


# --- the service ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedService:
    """`cellblock serve` in a temporary data dir, as a user starts it."""

    def __init__(self, root: Path, slots: int) -> None:
        self.root = root
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k.startswith(("CELLBLOCK_", "PATH", "LANG", "LC_"))}
        env.update(HOME=str(root), CELLBLOCK_DATA_DIR=str(root / "service"))
        self.log = open(root / "serve.log", "wb")  # noqa: SIM115 - lives with the process
        argv = [sys.executable, "-m", "cellblock", "serve", "--port", str(self.port), "--slots", str(slots)]
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.base_url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cellblock serve exited; see {root / 'serve.log'}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("cellblock serve was not ready within 120 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


# --- phases ---------------------------------------------------------------------------------------------------


def latency(paths: dict[str, Any], workload: Workload, runs: int, warmup: int) -> dict[str, Summary]:
    samples: dict[str, list[float]] = {p: [] for p in paths}
    for round_ in range(warmup + runs):
        for name in rotated(tuple(paths), round_):
            seconds, _ = timed(paths[name], workload)
            if round_ >= warmup:
                samples[name].append(seconds)
    return {name: summarize(values) for name, values in samples.items()}


def per_test(paths: dict[str, Any], wl: dict[str, Workload], reps: int) -> dict[str, dict[str, float]]:
    """p50 of the 100-test and the 1-test job per path, the marginal cost of one test, and the compile time."""
    totals: dict[str, dict[str, list[float]]] = {p: {"cpp100": [], "cpp1": []} for p in paths}
    compiles: dict[str, list[float]] = {p: [] for p in paths}
    for rep in range(reps + 1):  # the first rep warms up
        for name in rotated(tuple(paths), rep):
            for key in ("cpp1", "cpp100"):
                seconds, out = timed(paths[name], wl[key])
                if rep:
                    totals[name][key].append(seconds)
                    if isinstance(out, JobResult) and out.compile is not None:
                        compiles[name].append(out.compile.wall_time_s)
                    elif isinstance(paths[name], BarePath):
                        compiles[name].append(paths[name].last_compile_s)
    table = {}
    for name in paths:
        t100, t1 = statistics.median(totals[name]["cpp100"]), statistics.median(totals[name]["cpp1"])
        compile_ms = statistics.median(compiles[name]) * 1e3 if compiles[name] else float("nan")
        table[name] = {"t100_ms": t100 * 1e3, "t1_ms": t1 * 1e3, "per_test_ms": (t100 - t1) / 99 * 1e3,
                       "compile_ms": compile_ms}  # fmt: skip
    return table


def _local_runner(
    kind: str, directory: str, workload: Workload, count: int, conn: Connection, barrier: Barrier
) -> None:
    path: Any = SandboxPath(Path(directory)) if kind == "sandbox" else BarePath(Path(directory) / "bare")
    timed(path, workload)  # warm-up
    barrier.wait()
    started = time.time()
    for _ in range(count):
        timed(path, workload)
    conn.send((started, time.time()))
    conn.close()


def local_throughput(kind: str, root: Path, workload: Workload, jobs: int, slots: int) -> float:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(slots)
    pipes, procs = [], []
    for index in range(slots):
        parent, child = ctx.Pipe(duplex=False)
        directory = root / f"{kind}-{index}"
        proc = ctx.Process(target=_local_runner, args=(kind, str(directory), workload, jobs // slots, child, barrier))
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    spans: list[tuple[float, float]] = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"a {kind} runner failed")
    return (jobs // slots * slots) / (max(end for _, end in spans) - min(start for start, _ in spans))


def batch_throughput(base_url: str, workload: Workload, jobs: int) -> float:
    """One POST /v1/batches, then GET /v1/batches/{id}?wait=true; runs/s up to the moment the last result was
    stored (its finished_at)."""
    with httpx.Client(base_url=base_url, timeout=300) as client:
        started = time.time()
        response = client.post("/v1/batches", json={"jobs": [workload.spec] * jobs})
        if response.status_code != 202:
            raise RuntimeError(f"batch refused: {response.status_code} {response.text[:300]}")
        url = response.json()["url"]  # a long-poll: answered once every job has finished (or after 60 s: ask again)
        while not (body := client.get(url, params={"wait": "true"}).json())["done"]:
            pass
    results = [JobResult.model_validate(job) for job in body["jobs"]]
    for result in results:
        check(result, workload)
    last = max(r.finished_at for r in results if r.finished_at is not None)
    return jobs / (last.timestamp() - started)


def wait_throughput(base_url: str, workload: Workload, jobs: int, clients: int) -> float:
    per_client = jobs // clients
    errors: list[BaseException] = []

    def client_loop() -> None:
        try:
            api = ApiPath(base_url)
            for _ in range(per_client):
                timed(api, workload)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"wait=true client failed: {errors[0]}")
    return per_client * clients / (time.perf_counter() - started)


# --- report ---------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_latency(name: str, table: dict[str, Summary]) -> list[bool]:
    print(f"\n{name}: latency per job, sequential, interleaved ({table['api'].n} runs each)")
    print(f"  {'path':<9}{'p50 ms':>9}{'p95 ms':>9}{'runs/s':>9}{'p50 / bare':>12}")
    for path, s in table.items():
        print(
            f"  {path:<9}{s.p50_ms:>9.2f}{s.p95_ms:>9.2f}{s.runs_per_s:>9.1f}{s.p50_ms / table['bare'].p50_ms:>12.2f}"
        )
    extra = table["api"].p50_ms - table["sandbox"].p50_ms
    ok = extra <= TARGET_LATENCY_MS
    print(f"  api - sandbox: p50 {extra:+.2f} ms, p95 {table['api'].p95_ms - table['sandbox'].p95_ms:+.2f} ms; "
          f"api / sandbox p50 {table['api'].p50_ms / table['sandbox'].p50_ms:.3f}")  # fmt: skip
    print(f"  target wait=true p50 ≤ sandbox-alone p50 + {TARGET_LATENCY_MS:.0f} ms: {verdict(ok)}")
    return [ok]


def throughput(base_url: str, root: Path, workload: Workload, jobs: int, slots: int, rounds: int) -> dict[str, float]:
    """Median runs/s per path over `rounds` rounds; the order of the paths rotates every round."""
    measure: dict[str, Callable[[], float]] = {
        "sandbox": lambda: local_throughput("sandbox", root, workload, jobs, slots),
        "bare": lambda: local_throughput("bare", root, workload, jobs, slots),
        "api batch": lambda: batch_throughput(base_url, workload, jobs),
        "api wait=true": lambda: wait_throughput(base_url, workload, jobs, 2 * slots),
    }
    samples: dict[str, list[float]] = {name: [] for name in measure}
    for round_ in range(rounds):
        for name in rotated(tuple(measure), round_):
            samples[name].append(measure[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def print_throughput(name: str, rates: dict[str, float], jobs: int, rounds: int) -> list[bool]:
    print(f"\n{name}: throughput, {jobs} jobs per measurement, median of {rounds} interleaved rounds")
    for path, rate in rates.items():
        print(f"  {path:<16}{rate:>9.1f} runs/s   / sandbox {rate / rates['sandbox']:.2f}   / bare "
              f"{rate / rates['bare']:.2f}")  # fmt: skip
    oks = []
    for mode in ("api batch", "api wait=true"):
        ok = rates[mode] >= TARGET_THROUGHPUT * rates["sandbox"]
        oks.append(ok)
        print(f"  target {mode} ≥ {TARGET_THROUGHPUT} × sandbox-alone: {verdict(ok)}")
    return oks


def print_per_test(table: dict[str, dict[str, float]], reps: int) -> list[bool]:
    print(f"\ncpp100: one C++ program, 100 tests in one job vs 1 test (p50 of {reps})")
    print(f"  {'path':<9}{'100 tests ms':>14}{'1 test ms':>11}{'per test ms':>13}{'compile ms':>12}")
    for path, row in table.items():
        print(f"  {path:<9}{row['t100_ms']:>14.1f}{row['t1_ms']:>11.1f}{row['per_test_ms']:>13.2f}"
              f"{row['compile_ms']:>12.1f}")  # fmt: skip
    api, box = table["api"], table["sandbox"]
    print(f"  api - sandbox: 100 tests {api['t100_ms'] - box['t100_ms']:+.1f} ms, "
          f"1 test {api['t1_ms'] - box['t1_ms']:+.1f} ms (one queue trip per job, not per test)")  # fmt: skip
    ok = api["per_test_ms"] <= TARGET_PER_TEST * box["per_test_ms"]
    print(f"  target per-test cost through the API ≤ {TARGET_PER_TEST} × sandbox-alone: {verdict(ok)}")
    return [ok]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60, help="measured jobs per path for latency (default 60)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured rounds first (default 5)")
    parser.add_argument("--jobs", type=int, default=300, help="jobs per throughput measurement (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per path (default 3)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the cpp100 job per path (default 5)")
    parser.add_argument("--server", help="use this running server instead of starting `cellblock serve`")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="sandbox slots (default: cores)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cellblock-bench-", dir="/var/tmp"))
    root.chmod(0o711)
    service = None
    try:
        print(
            f"load before: {os.getloadavg()[0]:.2f}; {args.slots} slots; {datetime.now().isoformat(timespec='seconds')}"
        )
        service = None if args.server else EmbeddedService(root, args.slots)
        base_url = args.server or (service.base_url if service else "")
        wl = workloads()
        paths: dict[str, Any] = {"api": ApiPath(base_url), "sandbox": SandboxPath(root / "engine"),
                                 "bare": BarePath(root / "bare")}  # fmt: skip
        oks: list[bool] = []
        for name in ("py", "c"):
            oks += print_latency(name, latency(paths, wl[name], args.runs, args.warmup))
        oks += print_per_test(per_test(paths, wl, args.reps), args.reps)
        for name, jobs in (("py", args.jobs), ("c", max(args.slots * 2, args.jobs // 5))):
            rates = throughput(base_url, root, wl[name], jobs, args.slots, args.rounds)
            oks += print_throughput(name, rates, jobs, args.rounds)
        print(f"\nload after: {os.getloadavg()[0]:.2f}; targets met: {sum(oks)}/{len(oks)}")
        return 0 if all(oks) else 1
    finally:
        if service is not None:
            service.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
