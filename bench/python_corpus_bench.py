"""The Python corpus (bench/python_corpus: small functions with their asserts, exit 0 = pass) bare, through the
sandbox alone and through the API, for each isolation mode, all measured in the same run (issue 8, item 4).

Run on demand (root, `cellblock doctor` clean, redis-server for the API part), never as part of the test suite::

    sudo .venv/bin/python bench/python_corpus_bench.py [--rounds 3] [--runners N] [--modes fresh,warm,...]

Paths (every program's pass/fail is checked in every round and every mode):

* ``bare``     ``python3 file.py`` per program via ``subprocess.run`` (the files written once, up front)
* sandbox     ``Engine.run(JobSpec)`` per program in this process (language python3, as the worker runs it:
  slot, /box, ``python3 -B main.py``, verdict), one engine per mode with ``Settings(isolation=...)``
* API         ``cellblock serve --slots N`` per mode (``CELLBLOCK_ISOLATION=...``), the whole corpus as one
  ``POST /v1/batches``; wall = submit → the last job's ``finished_at``

Modes are settings (MODES below): ``fresh`` and ``warm`` always; ``shared`` and ``prewarmed`` run when the
settings they need exist and are reported as unavailable otherwise (the hook for modes still being built).

Sequential: one runner in this process; programs in corpus order, and for each program every path once in an
order that rotates per program and round (noise hits all alike). One runner per core: N processes pull program
indices from a shared counter (like ``xargs -P N``), started together after a barrier; wall = last end − first
start. The API rounds are interleaved with bare-with-N-processes rounds so their ratio comes from the same
minutes. Medians over ``--rounds`` rounds. See bench/README.md for what it prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # python_corpus and api_overhead

import httpx
import python_corpus
from api_overhead import ApiPath, BarePath, EmbeddedService, Summary, latency, workloads
from pydantic import ValidationError

from cellblock.config import Settings
from cellblock.engine import Engine
from cellblock.languages.registry import Registry
from cellblock.models import JobResult, JobSpec, Verdict
from cellblock.sandbox.host import SandboxHost

PYTHON = "/usr/bin/python3"  # what the sandbox runs (Debian's), not this venv's interpreter
BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
WAIT_S = 60  # the batch client's long-poll: GET /v1/batches/{id}?wait=true answers when all are done (or after this)

# Mode name → settings (keyword arguments of Settings, and CELLBLOCK_<NAME> for the service). A mode whose
# settings do not validate (a field or value this version lacks) is reported as unavailable, not an error, so
# modes still being built can be listed here (or given with --mode-setting NAME=key=value,...).
# python3.toml has `prewarm = "python"`: with isolation = "warm" and prewarm_runs > 0 (the default) a Python run
# is a fork of a pre-warmed interpreter in the slot, so plain "warm" turns that off to measure exec'd python3.
MODES: dict[str, dict[str, str]] = {
    "fresh": {"isolation": "fresh"},
    "warm": {"isolation": "warm", "prewarm_runs": "0"},  # warm slot, python3 exec'd per run
    "prewarmed": {"isolation": "warm"},  # the default: warm slot, a pre-warmed interpreter forks per run
    "shared": {"isolation": "warm-shared"},  # opt-in: runs share the slot's namespaces (no pre-warming there)
}
DEFAULT_MODES = "fresh,warm,prewarmed,shared"


def mode_problem(overrides: dict[str, str]) -> str | None:
    """Why these settings cannot be used here (None: they can)."""
    try:
        values: dict[str, Any] = dict(overrides)  # strings, coerced as they would be from the environment
        Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in overrides.items())}): {first['msg']}"
    return None


def job_spec(program: python_corpus.Program) -> JobSpec:
    return JobSpec.model_validate({"language": "python3", "files": [{"name": "main.py", "content": program.source}]})


# --- runners: run program i once, say whether it passed ---------------------------------------------------------


class BareRunner:
    def __init__(self, directory: Path, programs: list[python_corpus.Program]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.files = []
        for program in programs:
            path = directory / f"{program.group}_{program.entry}.py"
            path.write_text(program.source)
            self.files.append(path.name)

    def run(self, index: int) -> bool:
        done = subprocess.run([PYTHON, self.files[index]], cwd=self.dir, env=BARE_ENV, capture_output=True,
                              check=False)  # fmt: skip
        return done.returncode == 0

    def close(self) -> None:
        pass


class EngineRunner:
    """The worker's engine in this process, with one mode's settings; at most one warm slot of its own."""

    def __init__(self, data_dir: Path, overrides: dict[str, str], specs: list[JobSpec]) -> None:
        values: dict[str, Any] = {"data_dir": data_dir, "warm_slots": 1, **overrides}
        self.settings = Settings(**values)
        self.host = SandboxHost(self.settings)
        self.engine = Engine(self.settings, Registry.load(), self.host)
        self.specs = specs
        if self.settings.isolation != "fresh":
            self.run(0)
            # A warm host that cannot start a slot runs jobs fresh, and a pre-warmed interpreter that cannot start
            # is exec'd instead (both logged): that would measure the wrong thing, so refuse. _warm_idle is the
            # host's list of idle warm slots (after a job, ours is there).
            slots = [s.warm for s in getattr(self.host, "_warm_idle", []) if s.warm is not None]
            if not slots:
                raise RuntimeError(f"isolation={self.settings.isolation}: no warm slot started (see the log)")
            wants_zygote = self.settings.isolation == "warm" and getattr(self.settings, "prewarm_runs", 0) > 0
            if wants_zygote and getattr(slots[0], "prewarm", None) is None:
                raise RuntimeError("prewarm_runs > 0 but the slot runs python3 exec'd (see the log)")

    def run(self, index: int) -> bool:
        result = self.engine.run(self.specs[index])
        return result.verdict == Verdict.ACCEPTED

    def close(self) -> None:
        self.host.close_warm()


Runner = BareRunner | EngineRunner


def make_runners(
    root: Path, modes: dict[str, dict[str, str]], programs: list[python_corpus.Program], tag: str
) -> tuple[dict[str, Runner], dict[str, str]]:
    """A bare runner and one engine runner per mode; modes that cannot start are returned with the reason."""
    specs = [job_spec(p) for p in programs]
    runners: dict[str, Runner] = {"bare": BareRunner(root / f"bare-{tag}", programs)}
    problems: dict[str, str] = {}
    for name, overrides in modes.items():
        try:
            # A data dir per process: each SandboxHost writes its generated files (launcher, seccomp) there.
            runners[name] = EngineRunner(root / f"engine-{tag}", overrides, specs)
        except Exception as exc:  # reported, and the mode is left out
            problems[name] = f"{type(exc).__name__}: {exc}"
    return runners, problems


# --- sequential -------------------------------------------------------------------------------------------------


@dataclass
class Sequential:
    totals: dict[str, list[float]] = field(default_factory=dict)  # mode → seconds per round
    per_program: dict[str, list[float]] = field(default_factory=dict)  # mode → seconds, every run
    failed: dict[str, list[str]] = field(default_factory=dict)  # mode → "round:program" that failed


def rotated(items: list[str], k: int) -> list[str]:
    k %= len(items)
    return items[k:] + items[:k]


def sequential(runners: dict[str, Runner], programs: list[python_corpus.Program], rounds: int) -> Sequential:
    names = list(runners)
    out = Sequential({n: [] for n in names}, {n: [] for n in names}, {n: [] for n in names})
    for index in range(min(10, len(programs))):  # warm-up: page cache, first slots, lazy imports
        for name in names:
            runners[name].run(index)
    for round_ in range(rounds):
        totals = dict.fromkeys(names, 0.0)
        for index, program in enumerate(programs):
            for name in rotated(names, index + round_):
                started = time.perf_counter()
                ok = runners[name].run(index)
                elapsed = time.perf_counter() - started
                totals[name] += elapsed
                out.per_program[name].append(elapsed)
                if not ok:
                    out.failed[name].append(f"{round_}:{program.name}")
        for name in names:
            out.totals[name].append(totals[name])
    return out


# --- one runner per core ------------------------------------------------------------------------------------------


def _pool_worker(
    root: str, modes: dict[str, dict[str, str]], count: int, conn: Connection, barrier: Barrier,
    counter: Synchronized[int],
) -> None:  # fmt: skip
    """One runner process: holds a runner per path; on ("run", path) takes program indices until none are left."""
    programs = python_corpus.load()[:count]  # the same programs, in the same order, as the parent's
    try:
        runners, problems = make_runners(Path(root), modes, programs, tag=str(os.getpid()))
        for runner in runners.values():  # warm-up, unmeasured
            for index in range(3):
                runner.run(index)
        conn.send(("ready", problems))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            command, name = conn.recv()
            if command == "stop":
                break
            runner = runners[name]
            barrier.wait()
            started = time.perf_counter()
            failed: list[int] = []
            done = 0
            while True:
                with counter.get_lock():
                    index = counter.value
                    counter.value += 1
                if index >= len(programs):
                    break
                if not runner.run(index):
                    failed.append(index)
                done += 1
            conn.send(("done", (started, time.perf_counter(), done, failed)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        for runner in runners.values():
            runner.close()


class Pool:
    """N runner processes (spawned: no sandbox state inherited from this one), kept for the whole benchmark."""

    def __init__(self, root: Path, modes: dict[str, dict[str, str]], size: int, programs: int) -> None:
        ctx = mp.get_context("spawn")
        self.programs = programs
        self.barrier = ctx.Barrier(size)
        self.counter: Synchronized[int] = ctx.Value("i", 0)
        self.conns: list[Connection] = []
        self.procs = []
        for _ in range(size):
            parent, child = ctx.Pipe()
            args = (str(root), modes, programs, child, self.barrier, self.counter)
            proc = ctx.Process(target=_pool_worker, args=args)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        self.problems: dict[str, str] = {}
        for conn in self.conns:
            self.problems.update(self._recv(conn)[1])

    def _recv(self, conn: Connection) -> tuple[str, Any]:
        if not conn.poll(900):
            raise RuntimeError("a runner process did not answer within 900 s")
        kind, payload = conn.recv()
        if kind == "error":
            raise RuntimeError(f"a runner process failed:\n{payload}")
        return kind, payload

    def run(self, name: str) -> tuple[float, int, list[int]]:
        """Wall seconds for the whole corpus on `name` with all runners, programs run, failed indices."""
        with self.counter.get_lock():
            self.counter.value = 0
        for conn in self.conns:
            conn.send(("run", name))
        spans = [self._recv(conn)[1] for conn in self.conns]
        wall = max(s[1] for s in spans) - min(s[0] for s in spans)
        return wall, sum(s[2] for s in spans), sorted(i for s in spans for i in s[3])

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop", ""))
        for proc in self.procs:
            proc.join(60)
            if proc.is_alive():
                proc.kill()


# --- the API ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set for the block (EmbeddedService passes CELLBLOCK_* on to `cellblock serve`)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_service(root: Path, overrides: dict[str, str], slots: int) -> EmbeddedService:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)
    with environment({f"CELLBLOCK_{key.upper()}": value for key, value in overrides.items()}):
        return EmbeddedService(root, slots)


def run_batch(base_url: str, specs: list[dict[str, Any]]) -> tuple[float, float, list[int]]:
    """One POST /v1/batches. Returns (submit → last finished_at, submit → client saw all done, failed indices).

    The client long-polls the batch (``GET /v1/batches/{id}?wait=true``): the server answers once every job has
    finished, watching the batch's count of unfinished jobs, and serialises the results once, so that polling
    takes no CPU from the sandboxes being measured. The wall time comes from the server's finished_at; "seen" is
    when the client had every result.
    """
    with httpx.Client(base_url=base_url, timeout=300) as client:
        started = time.time()
        response = client.post("/v1/batches", json={"jobs": specs})
        if response.status_code != 202:
            raise RuntimeError(f"batch refused: {response.status_code} {response.text[:300]}")
        accepted = response.json()
        while not (body := client.get(accepted["url"], params={"wait": "true", "wait_s": WAIT_S}).json())["done"]:
            pass  # the server's wait ran out: ask again
        seen = time.time() - started
    results = [JobResult.model_validate(job) for job in body["jobs"]]
    failed = [i for i, r in enumerate(results) if r.verdict != Verdict.ACCEPTED]
    last = max(r.finished_at.timestamp() for r in results if r.finished_at is not None)
    return last - started, seen, failed


# --- report ------------------------------------------------------------------------------------------------------


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def passed(count: int, failed: list[Any]) -> str:
    return f"{count - len(failed)}/{count}"


def print_sequential(seq: Sequential, programs: list[python_corpus.Program], rounds: int) -> dict[str, Any]:
    print(f"\nsandbox alone, sequential: {len(programs)} programs × {rounds} rounds, each program on every path in "
          f"a rotating order")  # fmt: skip
    print(f"  {'path':<10}{'total s':>9}{'p50 ms':>9}{'p95 ms':>9}{'prog/s':>8}{'× bare':>8}   passed")
    bare_total = statistics.median(seq.totals["bare"])
    out = {}
    for name, totals in seq.totals.items():
        total = statistics.median(totals)
        runs = seq.per_program[name]
        row = {"total_s": total, "p50_ms": statistics.median(runs) * 1e3, "p95_ms": p95(runs) * 1e3,
               "programs_per_s": len(programs) / total, "x_bare": total / bare_total,
               "passed": passed(len(runs), seq.failed[name])}  # fmt: skip
        out[name] = row
        print(f"  {name:<10}{total:>9.2f}{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}{row['programs_per_s']:>8.0f}"
              f"{row['x_bare']:>8.2f}   {row['passed']}")  # fmt: skip
    return out


def print_walls(
    title: str, walls: dict[str, list[float]], failed: dict[str, list[Any]], runs: dict[str, int], programs: int
) -> dict[str, Any]:
    print(f"\n{title}")
    print(f"  {'path':<14}{'wall s':>8}{'min s':>8}{'max s':>8}{'prog/s':>8}{'× bare':>8}   passed")
    bare = statistics.median(walls["bare"])
    out = {}
    for name, values in walls.items():
        wall = statistics.median(values)
        row = {"wall_s": wall, "min_s": min(values), "max_s": max(values), "programs_per_s": programs / wall,
               "x_bare": wall / bare, "passed": passed(runs[name], failed[name])}  # fmt: skip
        out[name] = row
        print(f"  {name:<14}{wall:>8.2f}{min(values):>8.2f}{max(values):>8.2f}{row['programs_per_s']:>8.0f}"
              f"{row['x_bare']:>8.2f}   {row['passed']}")  # fmt: skip
    return out


def print_failures(label: str, failed: dict[str, list[Any]], programs: list[python_corpus.Program]) -> int:
    count = 0
    for name, items in failed.items():
        if items:
            count += len(items)
            shown = [programs[i].name if isinstance(i, int) else i for i in items[:8]]
            print(f"  FAILED {label} {name}: {len(items)} runs, e.g. {', '.join(map(str, shown))}")
    return count


def print_hello(table: dict[str, Summary], workload: str, runs: int) -> dict[str, Any]:
    print(f"\n{workload} through the API, wait=true, sequential, interleaved ({runs} runs each)")
    print(f"  {'path':<14}{'p50 ms':>9}{'p95 ms':>9}{'p50 / bare':>12}")
    out = {}
    for name, s in table.items():
        out[name] = {"p50_ms": s.p50_ms, "p95_ms": s.p95_ms}
        print(f"  {name:<14}{s.p50_ms:>9.2f}{s.p95_ms:>9.2f}{s.p50_ms / table['bare'].p50_ms:>12.2f}")
    return out


# --- main ---------------------------------------------------------------------------------------------------------


def parse_modes(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, dict[str, str]]:
    modes = {name: dict(settings) for name, settings in MODES.items()}
    for item in args.mode_setting:
        name, _, assignments = item.partition("=")
        pairs = [a.partition("=") for a in assignments.split(",") if a]
        if not name or not pairs or any(not key or not sep for key, sep, _ in pairs):
            parser.error(f"--mode-setting {item!r}: expected NAME=key=value[,key=value]")
        modes[name] = {key: value for key, _, value in pairs}
    chosen = {}
    for name in (n for n in args.modes.split(",") if n):
        if name not in modes:
            parser.error(f"unknown mode {name!r} (known: {', '.join(modes)}; define one with --mode-setting)")
        chosen[name] = modes[name]
    return chosen


def phase_sequential(
    root: Path, modes: dict[str, dict[str, str]], unavailable: dict[str, str], programs: list[python_corpus.Program],
    rounds: int,
) -> tuple[dict[str, Any], int]:  # fmt: skip
    """Starts every mode here first (a mode that cannot start moves from `modes` to `unavailable`, printed),
    then measures `rounds` sequential rounds (none: only the start-up check)."""
    runners, broken = make_runners(root, modes, programs, tag="main")
    for name, why in broken.items():
        print(f"  mode {name}: cannot start here, left out: {why}")
        unavailable[name] = why
        modes.pop(name)
    try:
        if rounds == 0:
            return {}, 0
        seq = sequential(runners, programs, rounds)
        return print_sequential(seq, programs, rounds), print_failures("sequential", seq.failed, programs)
    finally:
        for runner in runners.values():
            runner.close()  # gives the warm slots back before the runner processes take theirs


def phase_parallel(pool: Pool, modes: dict[str, dict[str, str]], programs: list[python_corpus.Program],
                   rounds: int, runners: int) -> tuple[dict[str, Any], int]:  # fmt: skip
    names = ["bare", *modes]
    walls: dict[str, list[float]] = {n: [] for n in names}
    failed: dict[str, list[Any]] = {n: [] for n in names}
    for round_ in range(rounds):
        for name in rotated(names, round_):
            wall, _, bad = pool.run(name)
            walls[name].append(wall)
            failed[name] += bad
    runs = dict.fromkeys(names, len(programs) * rounds)
    title = (f"sandbox alone, {runners} runners (one process each, taking the next program from a shared counter); "
             f"median of {rounds} rounds, paths interleaved")  # fmt: skip
    return print_walls(title, walls, failed, runs, len(programs)), print_failures("parallel", failed, programs)


def start_services(root: Path, modes: dict[str, dict[str, str]], slots: int, specs: list[dict[str, Any]]
                   ) -> dict[str, EmbeddedService]:  # fmt: skip
    services: dict[str, EmbeddedService] = {}
    for name, overrides in modes.items():
        try:
            services[name] = start_service(root / f"api-{name}", overrides, slots)
            run_batch(services[name].base_url, specs[:20])  # warm-up: the worker is up, its slots started
        except Exception as exc:  # reported; the other modes still run
            print(f"  mode {name}: the service cannot run it, left out: {exc}")
            if name in services:
                services.pop(name).stop()
    return services


def phase_api(
    pool: Pool, services: dict[str, EmbeddedService], specs: list[dict[str, Any]],
    programs: list[python_corpus.Program], rounds: int, slots: int,
) -> tuple[dict[str, Any], int]:  # fmt: skip
    names = ["bare"] + [f"api {n}" for n in services]
    walls: dict[str, list[float]] = {n: [] for n in names}
    seen: dict[str, list[float]] = {n: [] for n in names}
    failed: dict[str, list[Any]] = {n: [] for n in names}
    for round_ in range(rounds):
        for name in rotated(names, round_):
            if name == "bare":
                wall, _, bad = pool.run("bare")
                client = wall
            else:
                wall, client, bad = run_batch(services[name.removeprefix("api ")].base_url, specs)
            walls[name].append(wall)
            seen[name].append(client)
            failed[name] += bad
    runs = dict.fromkeys(names, len(programs) * rounds)
    title = (f"through the API: `cellblock serve --slots {slots}` per mode, the corpus as one POST /v1/batches, "
             f"wall = submit → last finished_at;\n  bare = {slots} processes; median of {rounds} rounds, "
             f"interleaved")  # fmt: skip
    table = print_walls(title, walls, failed, runs, len(programs))
    bare = statistics.median(walls["bare"])
    for name in names[1:]:
        client = statistics.median(seen[name])
        table[name]["client_wall_s"] = client
        ok = statistics.median(walls[name]) < bare
        print(f"  {name}: client saw all done after {client:.2f} s (long-poll: GET /v1/batches/{{id}}?wait=true); "
              f"target: less wall time than bare with one process per core: {'PASS' if ok else 'FAIL'}")  # fmt: skip
    return table, print_failures("api", failed, programs)


def phase_hello(root: Path, services: dict[str, EmbeddedService], runs: int) -> dict[str, Any]:
    """print(1) and a C hello world through the API per mode (sandbox alone: bench/warm_slots.py)."""
    out = {}
    for workload in ("py", "c"):
        paths: dict[str, Any] = {"bare": BarePath(root / "hello-bare")}
        paths.update({f"api {n}": ApiPath(s.base_url) for n, s in services.items()})
        table = latency(paths, workloads()[workload], runs, 5)
        label = "Python print(1)" if workload == "py" else "C hello world (compile + run; bare: gcc + ./main)"
        out[workload] = print_hello(table, label, runs)
    return out


def available_modes(wanted: dict[str, dict[str, str]]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The modes whose settings validate here, and why each other one cannot run (printed)."""
    unavailable = {name: problem for name, o in wanted.items() if (problem := mode_problem(o)) is not None}
    modes = {name: o for name, o in wanted.items() if name not in unavailable}
    for name in wanted:
        state = f"unavailable: {unavailable[name]}" if name in unavailable else f"settings {modes[name]}"
        print(f"  mode {name}: {state}")
    return modes, unavailable


def start_pool(root: Path, modes: dict[str, dict[str, str]], size: int, programs: int) -> Pool:
    """The runner processes; a mode one of them cannot start is dropped from `modes` (printed)."""
    pool = Pool(root, modes, size, programs)
    for name, why in pool.problems.items():
        print(f"  mode {name}: a runner process cannot start it, left out: {why}")
        modes.pop(name, None)
    return pool


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per path (default 3)")
    parser.add_argument("--runners", type=int, default=os.cpu_count() or 1, help="parallel runners (default: cores)")
    parser.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated (default {DEFAULT_MODES})")
    parser.add_argument("--mode-setting", action="append", default=[], metavar="NAME=key=value[,key=value]",
                        help="define or redefine a mode, e.g. zygote100=isolation=warm,prewarm_runs=100")  # fmt: skip
    parser.add_argument("--limit", type=int, default=0, help="only the first N programs (quick checks)")
    parser.add_argument("--no-sequential", action="store_true", help="skip the sequential part")
    parser.add_argument("--no-parallel", action="store_true", help="skip the one-runner-per-core part")
    parser.add_argument("--no-api", action="store_true", help="skip the API part")
    parser.add_argument("--hello-runs", type=int, default=40,
                        help="print(1) and C hello through the API per mode, wait=true latency (0: skip)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    programs = python_corpus.load()[: args.limit or None]
    print(f"{datetime.now().isoformat(timespec='seconds')}; load {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; "
          f"{len(programs)} programs; {subprocess.check_output([PYTHON, '--version'], text=True).strip()} "
          f"({PYTHON}); kernel {platform.release()}")  # fmt: skip
    modes, unavailable = available_modes(parse_modes(args, parser))
    root = Path(tempfile.mkdtemp(prefix="cellblock-bench-corpus-", dir="/var/tmp"))
    root.chmod(0o711)
    report: dict[str, Any] = {"programs": len(programs), "runners": args.runners, "rounds": args.rounds}
    failures = 0
    services: dict[str, EmbeddedService] = {}
    pool: Pool | None = None
    try:
        table, failures = phase_sequential(root, modes, unavailable, programs, 0 if args.no_sequential else args.rounds)
        report["unavailable"] = unavailable
        if table:
            report["sequential"] = table

        if args.runners > 0 and not (args.no_parallel and args.no_api):
            pool = start_pool(root, modes, args.runners, len(programs))
        if pool is not None and not args.no_parallel:
            report["parallel"], count = phase_parallel(pool, modes, programs, args.rounds, args.runners)
            failures += count
        if not args.no_api and pool is None:
            print("\nthe API part needs --runners > 0 (its bare reference is one process per core): skipped")
        if not args.no_api and pool is not None:
            specs = [{"language": "python3", "files": [{"name": "main.py", "content": p.source}]} for p in programs]
            services = start_services(root, modes, args.runners, specs)
            if services:
                report["api"], count = phase_api(pool, services, specs, programs, args.rounds, args.runners)
                failures += count
            if args.hello_runs > 0 and services:
                report["hello"] = phase_hello(root, services, args.hello_runs)
        print(f"\nload after: {os.getloadavg()[0]:.2f}; failed runs: {failures}")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0 if failures == 0 else 1
    finally:
        if pool is not None:
            pool.close()
        for service in services.values():
            service.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
