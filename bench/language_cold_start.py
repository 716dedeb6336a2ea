"""What a hello world costs in each language, cold: compile (if any) and run, sandboxed and bare.

Run on demand (root, `cellblock doctor` clean), never in the test suite::

    sudo .venv/bin/python bench/language_cold_start.py [--runs 5] [--languages c,kotlin] [--write]

Per installed language, the language's own self-test program (it copies stdin, here "Hello, World!", to
stdout), in two variants, interleaved round-robin (the order rotates every round, so noise hits both alike):

* ``sandbox``  the whole job through `Engine.run`, as a worker runs it: a slot, a fresh /box, the compile step
               in its own sandbox, the run in another, the checker. Cold: nothing survives between jobs (no
               compiler cache, no JIT cache, a fresh HOME), which is exactly what every job pays.
* ``bare``     the same compile and run argv via `subprocess.run` in a fresh temporary directory (HOME and the
               TOML's /tmp and /box paths pointed into it, so no cache survives either) as root, no sandbox.

Prints, per language, the median wall time of each and their ratio (sandbox / bare), plus the sandboxed
compile and run steps' own wall times. ``--write`` stores the medians with each toolchain's version in
bench/results/languages.json, which scripts/language_table.py puts into the README's language table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellblock.config import Settings
from cellblock.engine import Engine
from cellblock.languages.registry import SANDBOX_PATH, SELF_TEST_STDIN, Language, Registry, expand
from cellblock.models import JobSpec, Verdict
from cellblock.sandbox.host import SandboxHost
from cellblock.toolchains import fingerprint

RESULTS = Path(__file__).resolve().parent / "results" / "languages.json"
MEMORY_MIB = 256  # the default run limit, as {memory_mib} in the argv
COMPILE_TIMEOUT_S = 120


def job(lang: Language) -> JobSpec:
    return JobSpec.model_validate({
        "language": lang.name,
        "files": [{"name": lang.main_file_name(lang.self_test.source), "content": lang.self_test.source}],
        "tests": [{"stdin": SELF_TEST_STDIN, "expected_output": SELF_TEST_STDIN}],
        "checker": {"kind": "exact"},
        "compile_limits": {"cpu_time_s": 60, "wall_time_s": 120},
    })  # fmt: skip


def sandboxed(engine: Engine, lang: Language) -> tuple[float, float, float]:
    """(whole job, compile step, run step) wall seconds; raises if the program was not accepted."""
    started = time.perf_counter()
    result = engine.run(job(lang))
    elapsed = time.perf_counter() - started
    if result.verdict != Verdict.ACCEPTED:
        raise RuntimeError(f"{lang.name}: sandboxed run gave {result.verdict}: {result.message}")
    compile_s = result.compile.wall_time_s if result.compile else 0.0
    run_step = result.tests[0].run
    return elapsed, compile_s, run_step.wall_time_s if run_step else 0.0


def _bare_env(lang: Language, env: dict[str, str], home: Path) -> dict[str, str]:
    def local(value: str) -> str:  # the TOML's in-sandbox paths, pointed into this run's directory
        for prefix in ("/tmp", "/box"):
            if value == prefix or value.startswith(prefix + "/"):
                return str(home / prefix.strip("/")) + value[len(prefix) :]
        return value

    return {"PATH": SANDBOX_PATH, "HOME": str(home), "TMPDIR": str(home / "tmp"), "LANG": "C.UTF-8",
            **{key: local(value) for key, value in env.items()}}  # fmt: skip


def bare(lang: Language) -> float:
    """Compile and run the same program with the same argv, unsandboxed, in a fresh directory."""
    with tempfile.TemporaryDirectory(prefix="cellblock-bench-") as tmp:
        home = Path(tmp)
        (home / "tmp").mkdir()
        (home / "box").mkdir()
        source = lang.main_file_name(lang.self_test.source)
        (home / source).write_text(lang.self_test.source)
        started = time.perf_counter()
        if lang.compile is not None:
            argv = expand(lang.compile, source=source, memory_mib=MEMORY_MIB, compile_options=[])
            env = _bare_env(lang, lang.compile_environment(MEMORY_MIB), home)
            subprocess.run(argv, cwd=home, env=env, capture_output=True, check=True, timeout=COMPILE_TIMEOUT_S)
        argv = expand(lang.run, source=source, memory_mib=MEMORY_MIB, compile_options=[])
        env = _bare_env(lang, lang.run_environment(MEMORY_MIB), home)
        stdin = home / "stdin"  # a file, as the sandbox gives (sqlite's readfile('/dev/stdin') needs its size)
        stdin.write_text(SELF_TEST_STDIN)
        with stdin.open("rb") as stdin_file:
            done = subprocess.run(argv, cwd=home, env=env, stdin=stdin_file, capture_output=True, check=False,
                                  timeout=60)  # fmt: skip
        elapsed = time.perf_counter() - started
        if done.stdout.decode(errors="replace") != SELF_TEST_STDIN:
            raise RuntimeError(f"{lang.name}: bare run printed {done.stdout[:200]!r} {done.stderr[-300:]!r}")
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="measured runs per language and variant")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (fills the page cache)")
    parser.add_argument("--languages", help="comma-separated names (default: every installed language)")
    parser.add_argument("--write", action="store_true", help=f"store the medians in {RESULTS}")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="cellblock-bench-", dir="/var/tmp"))
    settings = Settings(data_dir=data_dir)
    registry = Registry.load()
    engine = Engine(settings, registry, SandboxHost(settings))
    names = args.languages.split(",") if args.languages else [lang.name for lang in registry.languages]
    languages = [registry.get(name) for name in names]
    languages = [lang for lang in languages if fingerprint(lang) is not None]
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    try:
        for round_no in range(args.warmup + args.runs):
            for i, lang in enumerate(languages):
                order = ("sandbox", "bare") if (round_no + i) % 2 == 0 else ("bare", "sandbox")
                for variant in order:
                    if variant == "sandbox":
                        whole, compile_s, run_s = sandboxed(engine, lang)
                        measured = {"sandbox": whole, "compile": compile_s, "run": run_s}
                    else:
                        measured = {"bare": bare(lang)}
                    if round_no >= args.warmup:
                        for key, value in measured.items():
                            times[(lang.name, key)].append(value)
            print(f"round {round_no + 1}/{args.warmup + args.runs} done", file=sys.stderr)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    def median_ms(name: str, key: str) -> float:
        return round(statistics.median(times[(name, key)]) * 1000, 1)

    rows: dict[str, dict[str, float | str | None]] = {}
    ratios = []
    print(f"{'language':<14} {'version':<12} {'sandbox ms':>10} {'bare ms':>9} {'ratio':>6} {'compile ms':>10} "
          f"{'run ms':>8}")  # fmt: skip
    for lang in languages:
        sandbox_ms, bare_ms = median_ms(lang.name, "sandbox"), median_ms(lang.name, "bare")
        compile_ms, run_ms = median_ms(lang.name, "compile"), median_ms(lang.name, "run")
        version = lang.host_version()
        ratios.append(sandbox_ms / bare_ms)
        rows[lang.name] = {"version": version, "sandbox_ms": sandbox_ms, "bare_ms": bare_ms,
                           "compile_ms": compile_ms, "run_ms": run_ms}  # fmt: skip
        print(f"{lang.name:<14} {version or '-':<12} {sandbox_ms:>10.1f} {bare_ms:>9.1f} {ratios[-1]:>6.2f} "
              f"{compile_ms:>10.1f} {run_ms:>8.1f}")  # fmt: skip
    if ratios:
        print(f"median ratio sandbox / bare over {len(rows)} languages: {statistics.median(ratios):.2f}")
    if args.write:
        old = json.loads(RESULTS.read_text())["languages"] if RESULTS.exists() else {}
        RESULTS.write_text(json.dumps({
            "measured": datetime.now(UTC).strftime("%Y-%m-%d"), "runs": args.runs, "cpus": os.cpu_count(),
            "kernel": platform.release(), "languages": {**old, **rows},
        }, indent=1, sort_keys=True) + "\n")  # fmt: skip
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
