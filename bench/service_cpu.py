"""Where the CPU of a job through the API goes: one /v1 batch of the Python corpus, CPU per job by role.

Run on demand (root, `cellblock doctor` clean), never as part of the test suite::

    sudo .venv/bin/python bench/service_cpu.py [--modes prewarmed,fresh] [--copies 2]

For each mode (python_corpus_bench.MODES) it starts ``cellblock serve --slots <cores>`` in a temporary data dir with
its own cgroup name, runs the corpus once as a warm-up, then ``--copies`` × the corpus as one batch, and prints the
CPU per job of:

* each process of the service by role (API, worker main process, worker pool processes, Redis, webhooks…),
  from /proc/<pid>/stat (utime + stime of the process itself: not its children), and this client;
* the sandboxes: the service's cgroup subtree (cpuacct.usage on v1, cpu.stat usage_usec on v2): slot helpers,
  zygotes, bwrap and every program run;
* the whole machine from /proc/stat (user, system, idle): what is left after the rows above is kernel work done
  in other contexts (namespace and cgroup teardown in kworkers, RCU, interrupts) and processes that ended.

The machine-wide rows count everything on the machine: run it on an otherwise idle one (`uptime`).
It answers "which part of the service path costs what" for issue 8's corpus target (a job through the API must cost
less than ``python3 file.py`` bare, ≈ 15 ms of CPU on these machines). Bare CPU per program is printed too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import python_corpus
import python_corpus_bench as corpus_bench

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
CGROUP_ROOT = Path("/sys/fs/cgroup")
ROLES = (  # first match of the command line wins
    ("cellblock worker", "worker"),
    ("cellblock serve", "api"),
    ("cellblock webhooks", "webhooks"),
    ("redis-server", "redis"),
)


def process_cpu(pid: int) -> tuple[str, float] | None:
    """(command line, utime + stime in s) of one process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return cmdline, (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children[ppid].append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def role_of(pid: int, cmdline: str, worker_main: set[int]) -> str:
    if pid == os.getpid():
        return "client (this benchmark)"
    for needle, role in ROLES:
        if needle in cmdline:
            if role == "worker":
                return "worker main process" if pid in worker_main else "worker pool processes"
            return role
    return "other service processes"


def sandbox_cpu_s(cgroup_name: str) -> float:
    v1 = CGROUP_ROOT / "cpuacct" / cgroup_name / "cpuacct.usage"
    if v1.exists():
        return int(v1.read_text()) / 1e9
    stat = CGROUP_ROOT / cgroup_name / "cpu.stat"
    for line in stat.read_text().splitlines():
        key, value = line.split()
        if key == "usage_usec":
            return int(value) / 1e6
    raise RuntimeError(f"no CPU counter for cgroup {cgroup_name}")


def machine_cpu_s() -> dict[str, float]:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) / CLOCK_TICK for v in fields)
    return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait, "steal": steal}


def in_cgroup(pid: int, cgroup_name: str) -> bool:
    """Whether the process is in the service's cgroup subtree (a slot's bwrap, helper or zygote, a run): its CPU
    is in the sandboxes' row already."""
    try:
        return f"/{cgroup_name}/" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def snapshot(service_pid: int, cgroup_name: str) -> tuple[dict[int, tuple[str, float]], float, dict[str, float]]:
    pids = [pid for pid in descendants(service_pid) if not in_cgroup(pid, cgroup_name)] + [os.getpid()]
    procs = {pid: got for pid in pids if (got := process_cpu(pid)) is not None}
    return procs, sandbox_cpu_s(cgroup_name), machine_cpu_s()


def bare_cpu_per_program(programs: list[python_corpus.Program], workdir: Path) -> float:
    paths = []
    for index, program in enumerate(programs):
        path = workdir / f"p{index}.py"
        path.write_text(program.source)
        paths.append(path)
    before = os.times()
    for path in paths:
        subprocess.run([corpus_bench.PYTHON, str(path)], env=corpus_bench.BARE_ENV, capture_output=True, check=True)
    after = os.times()
    return (after.children_user - before.children_user + after.children_system - before.children_system) / len(paths)


def measure(mode: str, programs: list[python_corpus.Program], copies: int, slots: int, root: Path) -> None:
    cgroup_name = f"cellblock-cpu-{os.getpid()}-{mode}"
    overrides = {**corpus_bench.MODES[mode], "cgroup_name": cgroup_name}
    specs = [corpus_bench.job_spec(p).model_dump(mode="json", exclude_none=True) for p in programs]
    service = corpus_bench.start_service(root / mode, overrides, slots)
    try:
        corpus_bench.run_batch(service.base_url, specs)  # warm-up: slots, zygotes, connections
        worker_main = {pid for pid in descendants(service.proc.pid)
                       if (got := process_cpu(pid)) and "cellblock worker" in got[0]
                       and (parent := process_cpu(int(Path(f"/proc/{pid}/stat").read_text()
                                                        .rsplit(")", 1)[1].split()[1])))
                       and "cellblock worker" not in parent[0]}  # fmt: skip
        procs0, sandbox0, machine0 = snapshot(service.proc.pid, cgroup_name)
        started = time.monotonic()
        wall, _, failed = corpus_bench.run_batch(service.base_url, specs * copies)
        elapsed = time.monotonic() - started
        procs1, sandbox1, machine1 = snapshot(service.proc.pid, cgroup_name)
    finally:
        service.stop()
        for top in (CGROUP_ROOT / c / cgroup_name for c in ("cpuacct", "memory", "pids", "")):
            for slot in top.glob("slot*"):  # emptied by the service's stop (its runs' and slots' cgroups)
                with contextlib.suppress(OSError):
                    slot.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()  # this leaves nothing of ours behind
    jobs = len(specs) * copies
    per_role: dict[str, float] = defaultdict(float)
    for pid, (cmdline, cpu) in procs1.items():
        per_role[role_of(pid, cmdline, worker_main)] += cpu - procs0.get(pid, (cmdline, 0.0))[1]
    per_role["sandboxes (the service's cgroups)"] = sandbox1 - sandbox0
    busy = machine1["busy"] - machine0["busy"]
    per_role["kernel elsewhere, ended processes"] = busy - sum(per_role.values())
    print(f"\n{mode}: {jobs} jobs in {wall:.2f} s (submit → last finished_at; client done after {elapsed:.2f} s), "
          f"{len(failed)} not accepted")  # fmt: skip
    print(f"  {'role':40s} {'CPU ms/job':>10s}")
    for role, cpu in sorted(per_role.items(), key=lambda item: -item[1]):
        print(f"  {role:40s} {cpu / jobs * 1000:10.2f}")
    print(f"  {'machine busy (all of the above)':40s} {busy / jobs * 1000:10.2f}")
    idle = machine1["idle"] - machine0["idle"]
    print(f"  {'machine idle':40s} {idle / jobs * 1000:10.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="prewarmed,fresh", help="comma-separated python_corpus_bench.MODES")
    parser.add_argument("--copies", type=int, default=2, help="the corpus this many times in the measured batch")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    programs = python_corpus.load()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o711)
        bare = bare_cpu_per_program(programs, root)
        print(f"bare `python3 file.py`: {bare * 1000:.2f} ms of CPU per program (sequential, {len(programs)} programs)")
        for mode in args.modes.split(","):
            measure(mode, programs, args.copies, args.slots, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
