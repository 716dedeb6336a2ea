"""Per-run cost of the sandbox against a bare ``subprocess.run``, measured in the same run.

Run on demand (root, on a host where `cellblock doctor` is clean), never as part of the test suite::

    sudo .venv/bin/python bench/sandbox_overhead.py [--runs 300] [--warmup 5] [--runners N] [--profile]

Variants, interleaved round-robin (the order rotates every round, so background noise hits all alike):

* ``c/bare``        a C hello world (compiled once with gcc, static by default) via ``subprocess.run``
* ``c/sandbox``     the same binary copied into the slot's /box, run with ``Sandbox.run(RunSpec)``
* ``py/bare``       ``python3 -c 'print(1)'`` via ``subprocess.run``
* ``py/sandbox``    the same through ``Sandbox.run``

Sequential: one runner in this process holds one slot and one workspace for the whole benchmark. Parallel:
one runner process per core, each holding its own slot; all runners start each batch together (a barrier),
and runs/s = runs in the batch / (last end - first start). See bench/README.md for what it prints.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier, Lock
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellblock.config import Settings
from cellblock.sandbox import cgroups as cg
from cellblock.sandbox import supervisor as sup
from cellblock.sandbox.bwrap import BwrapLayout, launch_argv
from cellblock.sandbox.host import Sandbox, SandboxHost
from cellblock.sandbox.seccomp import SeccompProgram
from cellblock.sandbox.spec import RunLimits, RunSpec

HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
PYTHON = "/usr/bin/python3"
LIMITS = RunLimits(
    cpu_time_s=2.0, wall_time_s=5.0, memory_kib=256 * 1024, processes=64, output_bytes=1 << 20,
    file_size_bytes=10 << 20,
)  # fmt: skip
TARGET_C_OVERHEAD_MS = 7.0
BWRAP_MEASURED_RUNS_PER_S = 170.0  # reference/sandbox-notes.md, 2 runners, C hello, bwrap 0.8.0
TARGET_PARALLEL_RUNS_PER_S = BWRAP_MEASURED_RUNS_PER_S * 0.8
VARIANTS = ("c/bare", "c/sandbox", "py/bare", "py/sandbox")
EXPECTED = {"c": b"hello\n", "py": b"1\n"}


def compile_hello(workdir: Path, *, dynamic: bool) -> Path:
    source = workdir / "hello.c"
    source.write_text(HELLO_C)
    binary = workdir / "hello"
    flags = [] if dynamic else ["-static"]
    subprocess.run(["gcc", "-O2", *flags, "-o", str(binary), str(source)], check=True)
    return binary


class Runner:
    """Holds a host, one slot and one workspace with the binary in it; runs any variant once."""

    def __init__(self, settings: Settings, binary: Path) -> None:
        self._stack = contextlib.ExitStack()
        self.host = SandboxHost(settings)
        self.sandbox: Sandbox = self._stack.enter_context(self.host.slot())
        self.box: Path = self._stack.enter_context(self.sandbox.workspace())
        shutil.copy2(binary, self.box / "hello")
        os.chown(self.box / "hello", self.sandbox.uid, self.sandbox.uid)
        self.binary = binary
        self.failures: dict[str, int] = defaultdict(int)
        self.reported: dict[str, list[tuple[float, float, int]]] = defaultdict(list)  # (wall s, cpu s, KiB)
        self.specs = {
            "c": RunSpec(argv=["./hello"], limits=LIMITS),
            "py": RunSpec(argv=["python3", "-c", "print(1)"], limits=LIMITS),
        }
        self.bare_argv = {"c": [str(binary)], "py": [PYTHON, "-c", "print(1)"]}

    def once(self, variant: str) -> float:
        """Seconds for one run, as the caller pays it. Wrong output counts as a failure (reported)."""
        lang, mode = variant.split("/")
        started = time.perf_counter()
        if mode == "bare":
            done = subprocess.run(self.bare_argv[lang], capture_output=True, check=False)
            elapsed = time.perf_counter() - started
            ok = done.returncode == 0 and done.stdout == EXPECTED[lang]
        else:
            raw = self.sandbox.run(self.specs[lang])
            elapsed = time.perf_counter() - started
            ok = raw.outcome == "ok" and raw.stdout == EXPECTED[lang]
            self.reported[variant].append((raw.wall_time_s, raw.cpu_time_s, raw.memory_kib))
        if not ok:
            self.failures[variant] += 1
        return elapsed

    def close(self) -> None:
        self._stack.close()


# ---------------------------------------------------------------------------------------------- statistics


@dataclass
class Summary:
    median_ms: float
    p95_ms: float
    mean_ms: float
    runs_per_s: float
    n: int


def summarize(seconds: list[float]) -> Summary:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return Summary(
        median_ms=statistics.median(ordered) * 1000, p95_ms=p95 * 1000,
        mean_ms=statistics.fmean(ordered) * 1000, runs_per_s=len(ordered) / sum(ordered), n=len(ordered),
    )  # fmt: skip


def rotated(items: tuple[str, ...], k: int) -> list[str]:
    k %= len(items)
    return list(items[k:] + items[:k])


# ---------------------------------------------------------------------------------------------- sequential


def sequential(runner: Runner, runs: int, warmup: int) -> dict[str, Summary]:
    times: dict[str, list[float]] = defaultdict(list)
    for i in range(warmup + runs):
        for variant in rotated(VARIANTS, i):
            elapsed = runner.once(variant)
            if i >= warmup:
                times[variant].append(elapsed)
    return {v: summarize(times[v]) for v in VARIANTS}


# ---------------------------------------------------------------------------------------------- parallel


def _worker(
    settings: Settings, binary: Path, conn: Connection, init_lock: Lock, barrier: Barrier, ballast_mib: int
) -> None:  # fmt: skip
    ballast = bytearray(ballast_mib << 20)  # noqa: F841 - held (and touched) for the process's lifetime
    with init_lock:  # hosts rewrite the shared etc/ and seccomp files at start: one at a time
        runner = Runner(settings, binary)
    try:
        conn.send(("ready", os.getpid()))
        while True:
            message = conn.recv()
            if message is None:
                break
            variant, count = message
            barrier.wait()
            start = time.monotonic()
            for _ in range(count):
                runner.once(variant)
            conn.send((start, time.monotonic(), dict(runner.failures)))
    finally:
        runner.close()


def parallel(
    settings: Settings, binary: Path, runners: int, runs: int, warmup: int, batch: int, ballast_mib: int
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, int]]:  # fmt: skip
    """runs/s per variant over all batches, the per-batch rates, and failures (summed over runners)."""
    ctx = mp.get_context("spawn")
    init_lock = ctx.Lock()
    barrier = ctx.Barrier(runners)
    conns, procs = [], []
    for _ in range(runners):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(settings, binary, child, init_lock, barrier, ballast_mib))
        proc.start()
        conns.append(parent)
        procs.append(proc)
    for conn in conns:
        conn.recv()

    def batch_rate(variant: str, count: int) -> tuple[int, float, dict[str, int]]:
        for conn in conns:
            conn.send((variant, count))
        replies = [conn.recv() for conn in conns]
        start, end = min(r[0] for r in replies), max(r[1] for r in replies)
        failures: dict[str, int] = defaultdict(int)
        for reply in replies:
            for key, value in reply[2].items():
                failures[key] += value
        return count * runners, end - start, failures

    try:
        for variant in VARIANTS:
            batch_rate(variant, warmup)
        per_runner = max(1, runs // runners)
        rounds = max(1, per_runner // batch)
        done: dict[str, int] = defaultdict(int)
        spent: dict[str, float] = defaultdict(float)
        rates: dict[str, list[float]] = defaultdict(list)
        failures: dict[str, int] = {}
        for r in range(rounds):
            for variant in rotated(VARIANTS, r):
                count, seconds, failures = batch_rate(variant, batch)
                done[variant] += count
                spent[variant] += seconds
                rates[variant].append(count / seconds)
        return {v: done[v] / spent[v] for v in VARIANTS}, rates, failures
    finally:
        for conn in conns:
            conn.send(None)
        for proc in procs:
            proc.join(30)


# ---------------------------------------------------------------------------------------------- profile


@contextlib.contextmanager
def timed(table: dict[str, list[float]], owner: Any, attr: str, label: str) -> Iterator[None]:
    original = getattr(owner, attr)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            table[label].append(time.perf_counter() - started)

    setattr(owner, attr, wrapper)
    try:
        yield
    finally:
        setattr(owner, attr, original)


def profile(runner: Runner, runs: int, lang: str) -> None:
    """Where one sandboxed run spends its time: every phase of Supervisor.run, wrapped and timed."""
    table: dict[str, list[float]] = defaultdict(list)
    run_cls = type(runner.host.cgroups.create("bench-probe", "probe", 1 << 24, 4))
    with contextlib.suppress(Exception):
        runner.host.cgroups.sweep_slot("bench-probe")
    points: list[tuple[Any, str, str]] = [
        (type(runner.host.cgroups), "create", "cgroup create (mkdir + limits)"),
        (sup.Supervisor, "_open_io", "open stdin/stdout/stderr files"),
        (SeccompProgram, "open_fd", "open seccomp fd"),
        (sup, "launch_argv", "build argv"),
        (subprocess.Popen, "__init__", "Popen (vfork + exec cellblock-launch)"),
        (sup, "_read_info", "wait for bwrap's child pid (info fd)"),
        (sup, "_wait_until_blocked", "wait for bwrap's mounts (child blocked)"),
        (run_cls, "attach", "attach pid to cgroups"),
        (sup.Supervisor, "_watch", "program runs (watch until bwrap exits)"),
        (subprocess.Popen, "wait", "Popen.wait (reap)"),
        (run_cls, "stats", "read cgroup stats"),
        (run_cls, "kill_all", "kill_all (also inside remove)"),
        (sup, "_read_capped", "read stdout/stderr"),
        (sup, "decide", "decide outcome"),
        (run_cls, "remove", "cgroup remove (kill_all + rmdir)"),
        (cg, "_rmdir_retrying", "rmdir (inside remove)"),
        (sup.Supervisor, "run", "Supervisor.run total"),
    ]
    with contextlib.ExitStack() as stack:
        for owner, attr, label in points:
            stack.enter_context(timed(table, owner, attr, label))
        for _ in range(5):
            runner.once(f"{lang}/sandbox")
        table.clear()
        for _ in range(runs):
            runner.once(f"{lang}/sandbox")
    print(f"\nProfile of {lang}/sandbox, {runs} sequential runs (median ms per call, calls per run):")
    for _, _, label in points:
        values = table.get(label, [])
        if values:
            print(f"  {label:<44} {statistics.median(values) * 1000:8.3f}   x{len(values) / runs:.1f}")
    runner.host.cgroups.sweep_slot("bench-probe")
    _remove_probe_parent(runner.host)


def _strip(argv: list[str], option: str, values: int) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        if argv[i] == option:
            i += 1 + values
            continue
        out.append(argv[i])
        i += 1
    return out


def components(runner: Runner, runs: int) -> None:
    """The pieces of a launch, each alone: what a fork with a uid change, the launcher, bwrap itself cost."""
    host, uid = runner.host, runner.sandbox.uid
    layout = BwrapLayout(bwrap=host.bwrap, launcher=str(host.launcher), box_dir=runner.box, etc_dir=host.etc_dir,
                         tmp_size_bytes=host.settings.tmp_size_mib << 20)  # fmt: skip
    seccomp_fd = host.seccomp.open_fd()
    os.set_inheritable(seccomp_fd, True)
    full = launch_argv(layout, LIMITS, ["./hello"], uid=uid, gid=uid, info_fd=98, block_fd=99,
                       seccomp_fd=seccomp_fd, env={}, ro_binds=[], network=False)  # fmt: skip
    full = _strip(_strip(full, "--info-fd", 1), "--block-fd", 1)
    launch = full[: full.index("--") + 1]  # cellblock-launch UID GID limits… --
    bwrap = full[full.index("--") + 1 :]
    as_slot: dict[str, Any] = {"user": uid, "group": uid, "extra_groups": []}
    hello = str(runner.binary)
    cases: list[tuple[str, list[str], dict[str, Any]]] = [
        ("bare hello, Popen (vfork)", [hello], {}),
        ("bare hello, Popen(user=, group=, extra_groups=) (fork)", [hello], as_slot),
        ("cellblock-launch -> hello (vfork + 1 static exec)", [*launch, hello], {}),
        ("bwrap (our argv) -> hello, Popen(user=) (fork)", bwrap, as_slot),
        ("cellblock-launch -> bwrap -> hello (= the launch)", full, {}),
        ("  same, bwrap without --unshare-net", _strip(full, "--unshare-net", 0), {}),
        ("  same, bwrap without --seccomp", _strip(full, "--seccomp", 1), {}),
    ]
    prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
    if prlimit and setpriv:  # the path cellblock-launch replaced, for comparison
        _, _, _, cpu_soft, cpu_hard, fsize, nofile, stack, as_bytes, _ = launch
        old = [prlimit, f"--cpu={cpu_soft}:{cpu_hard}", f"--fsize={fsize}", f"--nofile={nofile}",
               f"--stack={stack}", "--core=0", f"--as={as_bytes}", "--", setpriv, f"--reuid={uid}",
               f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
               "--"]  # fmt: skip
        cases.append(("old: prlimit -> setpriv -> hello (vfork + 2 dynamic execs)", [*old, hello], {}))
    samples: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(runs):
            for label, argv, kwargs in cases:
                os.lseek(seccomp_fd, 0, os.SEEK_SET)
                started = time.perf_counter()
                done = subprocess.run(argv, capture_output=True, pass_fds=(seccomp_fd,), check=False, **kwargs)
                samples[label].append(time.perf_counter() - started)
                if done.stdout != b"hello\n":
                    raise RuntimeError(f"{label}: {done.stderr.decode(errors='replace')}")
            started = time.perf_counter()
            host.cgroups.create("bench-probe", "probe", 1 << 28, 65).remove()
            samples["cgroup create + remove (empty)"].append(time.perf_counter() - started)
    finally:
        os.close(seccomp_fd)
        host.cgroups.sweep_slot("bench-probe")
        _remove_probe_parent(host)
    print(f"\nComponents alone, interleaved (median ms of {runs}; no cgroups, no handshake unless named):")
    for label, values in samples.items():
        print(f"  {label:<60} {statistics.median(values) * 1000:8.3f}")


def _remove_probe_parent(host: SandboxHost) -> None:
    driver = host.cgroups
    parents = (
        [driver.root / c / driver.name / "bench-probe" for c in cg.V1_CONTROLLERS]
        if driver.version == 1
        else [driver.root / driver.name / "bench-probe"]
    )
    for parent in parents:
        with contextlib.suppress(OSError):
            parent.rmdir()


# ---------------------------------------------------------------------------------------------- report


def report_accounting(reported: dict[str, list[tuple[float, float, int]]]) -> None:
    print("\nWhat the sandbox reports for these programs (median over the measured runs):")
    for variant, rows in sorted(reported.items()):
        wall = statistics.median(r[0] for r in rows) * 1000
        cpu = statistics.median(r[1] for r in rows) * 1000
        mem = statistics.median(r[2] for r in rows)
        print(f"  {variant:<12} wall_time {wall:6.2f} ms   cpu_time {cpu:6.2f} ms   memory {mem:7.0f} KiB")


def report_sequential(results: dict[str, Summary], failures: dict[str, int]) -> None:
    print(f"\nSequential, interleaved ({results['c/bare'].n} measured runs per variant):")
    print(f"  {'variant':<12} {'median ms':>10} {'p95 ms':>10} {'mean ms':>10} {'runs/s':>10}")
    for variant in VARIANTS:
        s = results[variant]
        print(f"  {variant:<12} {s.median_ms:10.2f} {s.p95_ms:10.2f} {s.mean_ms:10.2f} {s.runs_per_s:10.1f}")
    for lang in ("c", "py"):
        bare, box = results[f"{lang}/bare"], results[f"{lang}/sandbox"]
        print(f"  {lang}: sandbox - bare = {box.median_ms - bare.median_ms:+.2f} ms (median), "
              f"{box.p95_ms - bare.p95_ms:+.2f} ms (p95); "
              f"sandbox / bare = {box.median_ms / bare.median_ms:.2f}x")  # fmt: skip
    overhead = results["c/sandbox"].median_ms - results["c/bare"].median_ms
    verdict = "MET" if overhead <= TARGET_C_OVERHEAD_MS else "NOT MET"
    print(f"  target: C hello median overhead <= {TARGET_C_OVERHEAD_MS:.0f} ms over bare: {verdict} "
          f"({overhead:.2f} ms)")  # fmt: skip
    if any(failures.values()):
        print(f"  FAILED RUNS (wrong output or outcome): {dict(failures)}")


def report_parallel(runners: int, rates: dict[str, float], batches: dict[str, list[float]],
                    failures: dict[str, int]) -> None:  # fmt: skip
    print(f"\nParallel, {runners} runners (one slot each), interleaved batches:")
    print(f"  {'variant':<12} {'runs/s':>10} {'batch median':>13} {'batch min':>10} {'batch max':>10}")
    for variant in VARIANTS:
        b = batches[variant]
        print(f"  {variant:<12} {rates[variant]:10.1f} {statistics.median(b):13.1f} {min(b):10.1f} {max(b):10.1f}")
    for lang in ("c", "py"):
        print(f"  {lang}: sandbox / bare throughput = {rates[f'{lang}/sandbox'] / rates[f'{lang}/bare']:.2f}")
    c_rate = rates["c/sandbox"]
    verdict = "MET" if c_rate >= TARGET_PARALLEL_RUNS_PER_S else "NOT MET"
    print(f"  target: C hello >= {TARGET_PARALLEL_RUNS_PER_S:.0f} runs/s (0.8 x bwrap's measured "
          f"{BWRAP_MEASURED_RUNS_PER_S:.0f}/s): {verdict} ({c_rate:.1f}/s = "
          f"{c_rate / BWRAP_MEASURED_RUNS_PER_S:.2f} x 170)")  # fmt: skip
    if any(failures.values()):
        print(f"  FAILED RUNS (wrong output or outcome): {dict(failures)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="measured runs per variant (default 300)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured runs per variant first (default 5)")
    parser.add_argument("--runners", type=int, default=os.cpu_count() or 1, help="parallel runners (default: cores)")
    parser.add_argument("--batch", type=int, default=25, help="runs per runner per parallel batch (default 25)")
    parser.add_argument("--dynamic", action="store_true", help="link the C hello dynamically (default: static)")
    parser.add_argument("--no-parallel", action="store_true", help="skip the parallel part")
    parser.add_argument("--profile", action="store_true", help="also time each phase of a sandboxed run")
    parser.add_argument("--ballast-mib", type=int, default=0,
                        help="heap to touch in each runner first, like a worker's imports (default 0)")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (the sandbox creates cgroups and mounts)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="cellblock-bench-", dir="/var/tmp"))
    workdir.chmod(0o711)
    try:
        settings = Settings(data_dir=workdir / "data")
        binary = compile_hello(workdir, dynamic=args.dynamic)
        kernel = os.uname().release
        print(f"cellblock sandbox overhead: {os.cpu_count()} cores, kernel {kernel}, "
              f"C hello {'dynamic' if args.dynamic else 'static'}, python {PYTHON}")  # fmt: skip
        ballast = bytearray(args.ballast_mib << 20)  # a worker's heap makes fork() (not vfork) slower
        runner = Runner(settings, binary)
        try:
            print(f"ballast {len(ballast) >> 20} MiB, cgroup v{runner.host.cgroups.version}, "
                  f"slot {runner.sandbox.index}, poll interval {settings.poll_interval_s * 1000:.0f} ms")  # fmt: skip
            results = sequential(runner, args.runs, args.warmup)
            report_sequential(results, runner.failures)
            report_accounting(runner.reported)
            if args.profile:
                profile(runner, min(args.runs, 200), "c")
                profile(runner, min(args.runs, 100), "py")
                components(runner, min(args.runs, 100))
        finally:
            runner.close()
        if not args.no_parallel:
            rates, batches, failures = parallel(
                settings, binary, args.runners, args.runs, args.warmup, args.batch, args.ballast_mib
            )
            report_parallel(args.runners, rates, batches, failures)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
