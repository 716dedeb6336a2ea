"""Warm slots against fresh sandboxes and bare processes, measured in the same run (issue 8, phase 1).

Run on demand (root, `cellblock doctor` clean), never as part of the test suite::

    sudo .venv/bin/python bench/warm_slots.py [--runs 300] [--warmup 10] [--runners 2]

Variants, interleaved round-robin with the order rotated every round (noise hits all alike):

* ``c/bare``   a static C hello world via ``subprocess.run``
* ``c/fresh``  the same binary in /box, ``Sandbox.run(RunSpec)`` with isolation = "fresh" (bwrap per run)
* ``c/warm``   the same with isolation = "warm" (a long-lived slot, fresh pid/mount/IPC namespaces per run)
* ``c/shared`` the same with isolation = "warm-shared" (opt-in: runs share the slot's namespaces, cleaned after)
* ``py/…``     the same four for ``python3 -c 'print(1)'``
* ``pyfile/…`` ``python3 -B main.py`` (main.py: ``print(1)``, the python3 language's command and environment)
  bare, fresh, warm (exec'd in a warm slot) and ``pyfile/prewarm``: forked from a pre-warmed interpreter in a
  warm slot (slothelper/zygote.py, the language's ``prewarm``), recycled every ``prewarm_runs`` (default 50)
  runs — that restart is part of the measured time

Times are what the caller pays per run (cgroup set-up, launch, wait, accounting, cleanup). Each variant also
prints the median CPU time and memory peak the sandbox *reported*, to compare warm accounting with fresh.
With ``--runners N`` (default: the number of cores) it then measures throughput: N processes, each with its own
slots, run one variant at once after a barrier; runs/s = all runs / (last end − first start). Every round runs
every variant (order rotated), so "× bare" is the median over rounds of the ratio to that round's bare.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellblock.config import Settings
from cellblock.sandbox.host import Sandbox, SandboxHost
from cellblock.sandbox.spec import RunLimits, RunSpec

HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
PYTHON = "/usr/bin/python3"
LIMITS = RunLimits(
    cpu_time_s=2.0, wall_time_s=5.0, memory_kib=256 * 1024, processes=64, output_bytes=1 << 20,
    file_size_bytes=10 << 20,
)  # fmt: skip
VARIANTS = (
    "c/bare", "c/fresh", "c/warm", "c/shared", "py/bare", "py/fresh", "py/warm", "py/shared",
    "pyfile/bare", "pyfile/fresh", "pyfile/warm", "pyfile/prewarm",
)  # fmt: skip
MODES = {"fresh": "fresh", "warm": "warm", "shared": "warm-shared", "prewarm": "warm"}  # variant suffix → isolation
EXPECTED = {"c": b"hello\n", "py": b"1\n", "pyfile": b"1\n"}
PY_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}  # python3.toml's
SPECS = {
    "c": RunSpec(argv=["./hello"], limits=LIMITS),
    "py": RunSpec(argv=["python3", "-c", "print(1)"], limits=LIMITS),
    "pyfile": RunSpec(argv=["python3", "-B", "main.py"], limits=LIMITS, env=PY_ENV),
}
PREWARM_SPEC = RunSpec(argv=["python3", "-B", "main.py"], limits=LIMITS, env=PY_ENV, prewarm="python")


class Runner:
    """One slot per isolation (each with the binary in its /box); runs any variant once."""

    def __init__(self, data_dir: Path, binary: Path) -> None:
        self._stack = contextlib.ExitStack()
        self.sandboxes: dict[str, Sandbox] = {}
        for mode, isolation in MODES.items():
            host = SandboxHost(Settings(data_dir=data_dir, isolation=isolation, warm_slots=1))
            # Registered before the slot is entered, so it runs after the slot is given back: close_warm destroys
            # idle warm slots only (a slot still held stayed up, its /box mounted, after the bench).
            self._stack.callback(host.close_warm)
            sandbox = self._stack.enter_context(host.slot())
            box = self._stack.enter_context(sandbox.workspace())
            shutil.copy2(binary, box / "hello")
            (box / "main.py").write_text("print(1)\n")
            for name in ("hello", "main.py"):
                os.chown(box / name, sandbox.uid, sandbox.uid)
            self.sandboxes[mode] = sandbox
            if mode != "fresh":
                assert sandbox.warm is not None, f"the {isolation} host did not start a warm slot"
        (data_dir / "main.py").write_text("print(1)\n")
        self.bare_argv = {
            "c": [str(binary)], "py": [PYTHON, "-c", "print(1)"], "pyfile": [PYTHON, "-B", str(data_dir / "main.py")]
        }  # fmt: skip
        self.failures: dict[str, int] = defaultdict(int)
        self.reported: dict[str, list[tuple[float, int]]] = defaultdict(list)  # (cpu s, KiB)

    def once(self, variant: str) -> float:
        lang, mode = variant.split("/")
        started = time.perf_counter()
        if mode == "bare":
            done = subprocess.run(self.bare_argv[lang], capture_output=True, check=False)
            elapsed = time.perf_counter() - started
            ok = done.returncode == 0 and done.stdout == EXPECTED[lang]
        else:
            raw = self.sandboxes[mode].run(PREWARM_SPEC if mode == "prewarm" else SPECS[lang])
            elapsed = time.perf_counter() - started
            ok = raw.outcome == "ok" and raw.stdout == EXPECTED[lang]
            self.reported[variant].append((raw.cpu_time_s, raw.memory_kib))
        if not ok:
            self.failures[variant] += 1
        return elapsed

    def close(self) -> None:
        self._stack.close()


def _cpu_used(slot_cpu: Path | None) -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return total + (int(slot_cpu.read_text()) / 1e9 if slot_cpu is not None else 0.0)


def cpu_cost(runner: Runner, variants: tuple[str, ...], runs: int) -> dict[str, float]:
    """CPU seconds per run, everything of ours counted: this process and its children (bare), plus the slot's
    cgroup subtree (the sandbox's processes: bwrap, helper, the run). Unlike wall-clock numbers this hardly
    depends on other load, and 1 / it × cores bounds the throughput of an idle machine. Not counted: kernel
    work done asynchronously in kworkers (namespace teardown: fresh and warm do more of it than warm-shared)."""
    cost: dict[str, float] = {}
    for variant in variants:
        mode = variant.split("/")[1]
        slot_cpu = None
        if mode != "bare":
            sandbox = runner.sandboxes[mode]
            settings = sandbox._host.settings
            slot_dir = settings.cgroup_root / "cpuacct" / settings.cgroup_name / f"slot{sandbox.index}"
            slot_cpu = slot_dir / "cpuacct.usage"
        for _ in range(5):
            runner.once(variant)
        before = _cpu_used(slot_cpu)
        for _ in range(runs):
            runner.once(variant)
        cost[variant] = (_cpu_used(slot_cpu) - before) / runs
    return cost


def compile_hello(workdir: Path) -> Path:
    (workdir / "hello.c").write_text(HELLO_C)
    subprocess.run(["gcc", "-O2", "-static", "-o", str(workdir / "hello"), str(workdir / "hello.c")], check=True)
    return workdir / "hello"


def sequential(runner: Runner, runs: int, warmup: int, variants: tuple[str, ...] = VARIANTS) -> dict[str, list[float]]:
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(warmup):
        for variant in variants:
            runner.once(variant)
    runner.reported.clear()
    runner.failures.clear()
    for index in range(runs):
        k = index % len(variants)
        for variant in variants[k:] + variants[:k]:
            times[variant].append(runner.once(variant))
    return times


def _parallel_worker(data_dir: Path, binary: Path, runs: int, barrier: Barrier, commands: Any, out: Any) -> None:
    """One runner for the whole measurement: for each variant it is sent, 5 warm-ups, the barrier, `runs` runs."""
    runner = Runner(data_dir, binary)
    try:
        for variant in iter(commands.get, None):
            for _ in range(5):
                runner.once(variant)
            runner.failures.clear()
            barrier.wait()
            started = time.perf_counter()
            for _ in range(runs):
                runner.once(variant)
            out.put((started, time.perf_counter(), runner.failures.get(variant, 0)))
    finally:
        runner.close()


def parallel(
    data_dir: Path, binary: Path, runners: int, runs: int, variants: tuple[str, ...] = VARIANTS, rounds: int = 5
) -> tuple[dict[str, float], dict[str, float]]:
    """(median runs/s, median of the per-round ratio to the same language's bare) per variant.

    The same `runners` processes measure every variant; each round runs the variants one after another (order
    rotated per round), so a burst of load from elsewhere hits one round of every variant, not all of one."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(runners)
    out = ctx.Queue()
    queues = [ctx.Queue() for _ in range(runners)]
    procs = [ctx.Process(target=_parallel_worker, args=(data_dir, binary, runs, barrier, q, out)) for q in queues]
    for proc in procs:
        proc.start()
    rates: dict[str, list[float]] = defaultdict(list)
    ratios: dict[str, list[float]] = defaultdict(list)
    try:
        for index in range(rounds):
            k = index % len(variants)
            this_round: dict[str, float] = {}
            for variant in variants[k:] + variants[:k]:
                for queue in queues:
                    queue.put(variant)
                spans = [out.get(timeout=600) for _ in procs]
                failures = sum(s[2] for s in spans)
                if failures:
                    print(f"  {variant}: {failures} failed runs", file=sys.stderr)
                this_round[variant] = runners * runs / (max(s[1] for s in spans) - min(s[0] for s in spans))
                rates[variant].append(this_round[variant])
            for variant, rate in this_round.items():
                bare = this_round.get(variant.split("/")[0] + "/bare")
                if bare:
                    ratios[variant].append(rate / bare)
    finally:
        for queue in queues:
            queue.put(None)
        for proc in procs:
            proc.join()
    return (
        {v: statistics.median(r) for v, r in rates.items()},
        {v: statistics.median(r) for v, r in ratios.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runners", type=int, default=os.cpu_count() or 1, help="0 skips the throughput part")
    parser.add_argument("--parallel-runs", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds (each runs every variant once)")
    parser.add_argument("--throughput-only", action="store_true", help="skip the sequential part")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset, e.g. c/bare,c/shared")
    args = parser.parse_args()
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {sorted(unknown)}")
    data_dir = Path(tempfile.mkdtemp(prefix="cellblock-bench-warm-", dir="/var/tmp"))
    data_dir.chmod(0o711)
    try:
        binary = compile_hello(data_dir)
        if not args.throughput_only:
            print_sequential(data_dir, binary, args.runs, args.warmup, variants)
            runner = Runner(data_dir, binary)
            try:
                cost = cpu_cost(runner, variants, args.runs)
            finally:
                runner.close()
            print(f"\nCPU per run (host + slot cgroup, {args.runs} runs each; idle-machine bound = cores / CPU)")
            for variant in variants:
                bare = cost.get(variant.split("/")[0] + "/bare")
                ratio = f"{bare / cost[variant]:5.2f} × bare" if bare else ""
                print(f"{variant:10} {cost[variant] * 1000:8.3f} ms  {ratio}")
        if args.runners > 0:
            rates, ratios = parallel(data_dir, binary, args.runners, args.parallel_runs, variants, args.rounds)
            print(f"\nthroughput, {args.runners} runners × {args.parallel_runs} runs, {args.rounds} interleaved rounds "
                  "(medians; × bare = median of the per-round ratios)")  # fmt: skip
            for variant in variants:
                ratio = f"{ratios[variant]:5.2f} × bare" if variant in ratios else ""
                print(f"{variant:10} {rates[variant]:8.1f} runs/s  {ratio}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def print_sequential(
    data_dir: Path, binary: Path, runs: int, warmup: int, variants: tuple[str, ...] = VARIANTS
) -> None:
    runner = Runner(data_dir, binary)
    try:
        times = sequential(runner, runs, warmup, variants)
    finally:
        runner.close()
    print(f"sequential, {runs} interleaved runs per variant (ms per run as the caller pays it)")
    print(f"{'variant':10} {'median':>8} {'p95':>8} {'runs/s':>8} {'cpu med':>8} {'peak KiB':>9} {'failed':>6}")
    for variant in variants:
        ordered = sorted(times[variant])
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        rep = runner.reported.get(variant, [])
        cpu = f"{statistics.median(r[0] for r in rep) * 1000:.2f}" if rep else "-"
        peak = f"{statistics.median(r[1] for r in rep):.0f}" if rep else "-"
        failed = runner.failures.get(variant, 0)
        print(f"{variant:10} {statistics.median(ordered) * 1000:8.2f} {p95 * 1000:8.2f} "
              f"{len(ordered) / sum(ordered):8.1f} {cpu:>8} {peak:>9} {failed:6d}")  # fmt: skip


if __name__ == "__main__":
    main()
