"""The cgroup drivers (`cellblock.sandbox.cgroups`).

cgroup v2 is tested against a fake cgroupfs: a tmp dir whose files play the kernel's interface files. These
machines are v1, so this is how the v2 driver is exercised at all. Where the kernel has behaviour a plain
directory lacks, a fixture plays it: `rmdir` of a cgroup removes its interface files but fails with EBUSY
while the cgroup has processes or children. Processes cannot vanish from a fake ``cgroup.procs`` by
themselves, so the kill tests empty it when (and only when) the driver has done what kills them.

cgroup v1 is tested for real (root, /sys/fs/cgroup is v1 here): a run cgroup is created, a process attached,
counters read, everything killed and removed, and nothing may remain.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from cellblock.errors import SandboxFailure, SandboxUnavailable
from cellblock.sandbox import cgroups
from cellblock.sandbox.cgroups import CgroupV1, CgroupV2, V2Run, detect_driver

ALL_V2 = "cpuset cpu io memory hugetlb pids rdma misc"
# Real pids can never be this large (pid_max is at most 2**22), so even a stray real kill() would hit nothing.
FAKE_PIDS = (4_194_401, 4_194_402)


# ---------------------------------------------------------------------------------------------- fake cgroupfs


@pytest.fixture
def v2root(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text(ALL_V2 + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    return root


@pytest.fixture
def cgroupfs_rmdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make rmdir under tmp_path behave like cgroupfs: interface files go with the dir; EBUSY while in use."""
    real_rmdir = Path.rmdir

    def rmdir(self: Path) -> None:
        if tmp_path not in self.parents:
            real_rmdir(self)
            return
        if not self.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(self))
        procs = self / "cgroup.procs"
        in_use = procs.is_file() and procs.read_text().split()
        if in_use or any(p.is_dir() for p in self.iterdir()):
            raise OSError(errno.EBUSY, "Device or resource busy", str(self))
        shutil.rmtree(self)

    monkeypatch.setattr(Path, "rmdir", rmdir)


@pytest.fixture
def fake_kill(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record kill(2) calls instead of sending anything; the test decides what a kill does to the fake tree."""
    calls: list[tuple[int, int]] = []

    def kill(pid: int, sig: int) -> None:
        calls.append((pid, sig))

    monkeypatch.setattr(os, "kill", kill)
    return calls


def make_run_dir(path: Path, pids: tuple[int, ...] = ()) -> Path:
    path.mkdir(parents=True)
    (path / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))
    return path


# ---------------------------------------------------------------------------------------------- v2: creation


def test_v2_create_enables_controllers_at_every_level_and_writes_limits(v2root: Path) -> None:
    driver = CgroupV2(v2root, "cellblock")
    run = driver.create("slot0", "run1", 256 * 1024 * 1024, 65)
    assert isinstance(run, V2Run)
    path = v2root / "cellblock" / "slot0" / "run1"
    assert run.path == path
    for level in (v2root, v2root / "cellblock", v2root / "cellblock" / "slot0"):
        assert (level / "cgroup.subtree_control").read_text() == "+memory +pids +cpu", level
    assert not (path / "cgroup.subtree_control").exists()  # the run is a leaf: its processes live there
    assert (path / "memory.max").read_text() == str(256 * 1024 * 1024)
    assert (path / "memory.swap.max").read_text() == "0"
    assert (path / "memory.oom.group").read_text() == "1"
    assert (path / "pids.max").read_text() == "65"
    assert run.procs_file() == path / "cgroup.procs"


def test_v2_controllers_already_enabled_are_not_written_again(v2root: Path) -> None:
    # The kernel reads back enabled controllers without '+'.
    (v2root / "cgroup.subtree_control").write_text("cpuset cpu io memory pids\n")
    ours = v2root / "cellblock"
    ours.mkdir()
    (ours / "cgroup.subtree_control").write_text("memory\n")
    CgroupV2(v2root, "cellblock").create("slot2", "run1", 1 << 20, 4)
    assert (v2root / "cgroup.subtree_control").read_text() == "cpuset cpu io memory pids\n"
    assert (ours / "cgroup.subtree_control").read_text() == "+pids +cpu"  # only what is missing, in order
    assert (ours / "slot2" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"


def test_v2_second_run_in_a_slot_reuses_the_parents(v2root: Path) -> None:
    driver = CgroupV2(v2root, "cellblock")
    driver.create("slot0", "run1", 1 << 20, 4)
    driver.create("slot0", "run2", 2 << 20, 5)
    slot = v2root / "cellblock" / "slot0"
    assert sorted(p.name for p in slot.iterdir() if p.is_dir()) == ["run1", "run2"]
    assert (slot / "run2" / "memory.max").read_text() == str(2 << 20)


@pytest.mark.usefixtures("cgroupfs_rmdir", "fake_kill")
def test_v2_a_stale_run_dir_is_removed_and_made_anew_not_reused(v2root: Path) -> None:
    """A killed holder of the slot can leave run1 behind; the next holder replaces it with a fresh one."""
    driver = CgroupV2(v2root, "cellblock")
    driver.create("slot0", "run1", 1 << 20, 4)
    stale = v2root / "cellblock" / "slot0" / "run1"
    (stale / "memory.events").write_text("oom_kill 7\n")  # the old run's counters
    run = driver.create("slot0", "run1", 2 << 20, 4)
    assert (stale / "memory.max").read_text() == str(2 << 20)
    assert run.stats().oom_kills == 0  # fresh counters, not the stale ones


@pytest.mark.usefixtures("cgroupfs_rmdir")
def test_v2_create_failure_removes_the_half_made_cgroup(v2root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = cgroups._write

    def write(path: Path, value: str) -> None:
        if path.name == "pids.max":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_write(path, value)

    monkeypatch.setattr(cgroups, "_write", write)
    with pytest.raises(SandboxFailure, match="Permission denied"):
        CgroupV2(v2root, "cellblock").create("slot0", "run1", 1 << 20, 4)
    assert not (v2root / "cellblock" / "slot0" / "run1").exists()


def test_v2_service_in_the_delegated_root_moves_itself_into_a_leaf(
    v2root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delegate=yes puts our own processes in the delegated cgroup; the kernel then refuses subtree_control
    (EBUSY, "no internal processes") until they move into a leaf."""
    (v2root / "cgroup.procs").write_text("4242\n4343\n")
    real_write = cgroups._write

    def write(path: Path, value: str) -> None:
        if path == v2root / "cgroup.subtree_control" and (v2root / "cgroup.procs").read_text().strip():
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        if path.name == "cgroup.procs" and path.parent.name == "supervisor":
            # the kernel moves the pid: it leaves the parent's list
            parent = path.parent.parent / "cgroup.procs"
            parent.write_text("\n".join(p for p in parent.read_text().split() if p != value))
            with open(path, "a") as handle:
                handle.write(value + "\n")
            return
        real_write(path, value)

    monkeypatch.setattr(cgroups, "_write", write)
    CgroupV2(v2root, "cellblock").create("slot0", "run1", 1 << 20, 4)
    assert (v2root / "supervisor" / "cgroup.procs").read_text().split() == ["4242", "4343"]
    assert "+memory" in (v2root / "cgroup.subtree_control").read_text()
    assert (v2root / "cellblock" / "slot0" / "run1" / "memory.max").read_text() == str(1 << 20)


# ---------------------------------------------------------------------------------------------- v2: accounting


def test_v2_stats_are_parsed_from_the_counters(v2root: Path) -> None:
    run = CgroupV2(v2root, "cellblock").create("slot0", "run1", 1 << 30, 10)
    path = v2root / "cellblock" / "slot0" / "run1"
    (path / "cpu.stat").write_text(
        "usage_usec 12345\nuser_usec 10000\nsystem_usec 2345\nnr_periods 0\nnr_throttled 0\n"
        "throttled_usec 0\nnr_bursts 0\nburst_usec 0\n"
    )
    (path / "memory.peak").write_text("52428800\n")
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\noom_group_kill 1\n")
    stats = run.stats()
    assert stats.cpu_time_ns == 12_345_000
    assert stats.memory_peak_bytes == 52_428_800
    assert stats.oom_kills == 1  # oom_kill, not oom (2) nor max (17)
    assert run.cpu_time_ns() == 12_345_000


def test_v2_stats_without_counters_are_zero(v2root: Path) -> None:
    # An old kernel without memory.peak, or a counter file that is gone: zeros, not a crash.
    run = V2Run(make_run_dir(v2root / "r"))
    stats = run.stats()
    assert (stats.cpu_time_ns, stats.memory_peak_bytes, stats.oom_kills) == (0, 0, 0)


def test_v2_attach_writes_the_pid(v2root: Path) -> None:
    run = CgroupV2(v2root, "cellblock").create("slot0", "run1", 1 << 20, 4)
    run.attach(4321)
    assert (v2root / "cellblock" / "slot0" / "run1" / "cgroup.procs").read_text() == "4321"
    assert run.pids() == [4321]


# ---------------------------------------------------------------------------------------------- v2: kill, remove


def _serve_cgroup_kill(path: Path, received: list[str]) -> threading.Thread:
    """cgroup.kill as a FIFO: when the driver has written to it and closed it, 'the kernel' kills everything."""
    fifo = path / "cgroup.kill"
    os.mkfifo(fifo)

    def kernel() -> None:
        with open(fifo) as handle:  # blocks until the driver opens it for writing
            received.append(handle.read())  # returns at the driver's close
        (path / "cgroup.procs").write_text("")

    thread = threading.Thread(target=kernel, daemon=True)
    thread.start()
    return thread


def _unblock(path: Path, thread: threading.Thread) -> None:
    thread.join(2)
    if thread.is_alive():  # the driver never wrote cgroup.kill: release the thread so the test can end
        with contextlib.suppress(OSError):
            os.close(os.open(path / "cgroup.kill", os.O_WRONLY | os.O_NONBLOCK))
        thread.join(2)


@pytest.mark.usefixtures("fake_kill")
def test_v2_kill_all_writes_cgroup_kill_and_waits_until_empty(v2root: Path) -> None:
    path = make_run_dir(v2root / "cellblock" / "slot0" / "run1", FAKE_PIDS)
    received: list[str] = []
    thread = _serve_cgroup_kill(path, received)
    try:
        started = time.monotonic()
        V2Run(path).kill_all()
        elapsed = time.monotonic() - started
    finally:
        _unblock(path, thread)
    assert received == ["1"]
    assert (path / "cgroup.procs").read_text() == ""
    assert elapsed < 2  # it returned because the cgroup emptied, not at its 5 s deadline


def test_v2_kill_all_without_cgroup_kill_signals_every_pid(v2root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Kernels before 5.14 have no cgroup.kill: the driver must SIGKILL each listed pid until none is left.
    path = make_run_dir(v2root / "run1", FAKE_PIDS)
    killed: list[tuple[int, int]] = []

    def kill(pid: int, sig: int) -> None:
        killed.append((pid, sig))
        left = [p for p in (path / "cgroup.procs").read_text().split() if int(p) != pid]
        (path / "cgroup.procs").write_text("\n".join(left))

    monkeypatch.setattr(os, "kill", kill)
    V2Run(path).kill_all()
    assert sorted(killed) == [(p, signal.SIGKILL) for p in FAKE_PIDS]
    assert V2Run(path).pids() == []


@pytest.mark.usefixtures("fake_kill")
def test_v2_kill_all_gives_up_when_processes_survive(v2root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_run_dir(v2root / "run1", FAKE_PIDS)
    monkeypatch.setattr(cgroups, "time", SimpleNamespace(monotonic=_fast_clock(), sleep=lambda s: None))
    with pytest.raises(SandboxFailure, match="survive"):
        V2Run(path).kill_all()


@pytest.mark.usefixtures("cgroupfs_rmdir", "fake_kill")
def test_v2_remove_kills_then_removes(v2root: Path) -> None:
    run = CgroupV2(v2root, "cellblock").create("slot0", "run1", 1 << 20, 4)
    path = v2root / "cellblock" / "slot0" / "run1"
    path.joinpath("cgroup.procs").write_text(f"{FAKE_PIDS[0]}\n")
    received: list[str] = []
    thread = _serve_cgroup_kill(path, received)
    try:
        run.remove()
    finally:
        _unblock(path, thread)
    assert received == ["1"]
    assert not path.exists()
    assert (v2root / "cellblock" / "slot0").is_dir()  # the slot's parent stays for the next run


@pytest.mark.usefixtures("cgroupfs_rmdir")
def test_v2_sweep_slot_kills_and_removes_leftovers(v2root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slot = v2root / "cellblock" / "slot1"
    left = [make_run_dir(slot / "run7", (FAKE_PIDS[0],)), make_run_dir(slot / "run8", (FAKE_PIDS[1],))]
    killed: list[int] = []

    def kill(pid: int, sig: int) -> None:
        assert sig == signal.SIGKILL
        killed.append(pid)
        for run in left:
            procs = run / "cgroup.procs"
            if procs.exists() and str(pid) in procs.read_text().split():
                procs.write_text("")

    monkeypatch.setattr(os, "kill", kill)
    CgroupV2(v2root, "cellblock").sweep_slot("slot1")
    assert sorted(killed) == sorted(FAKE_PIDS)
    assert slot.is_dir() and not any(slot.iterdir())
    CgroupV2(v2root, "cellblock").sweep_slot("slot-never-used")  # nothing there: no error


# ---------------------------------------------------------------------------------------------- v2: problems


def test_v2_problems_empty_when_delegated(v2root: Path) -> None:
    assert CgroupV2(v2root, "cellblock").problems() == []


def test_v2_problems_name_the_missing_controllers_and_the_fix(v2root: Path) -> None:
    (v2root / "cgroup.controllers").write_text("cpuset io memory\n")
    problems = CgroupV2(v2root, "cellblock").problems()
    assert len(problems) == 1
    assert "pids" in problems[0] and "cpu" in problems[0]
    assert "memory" not in problems[0].split(":", 1)[1].split("(")[0]  # only the missing ones are listed
    assert "Delegate=yes" in problems[0]


def test_v2_problems_with_no_controllers_at_all(v2root: Path) -> None:
    # What this machine's /sys/fs/cgroup/unified looks like: a v2 mount whose controllers are bound to v1.
    (v2root / "cgroup.controllers").write_text("\n")
    [problem] = CgroupV2(v2root, "cellblock").problems()
    assert "memory, pids, cpu" in problem


def test_v2_problems_when_the_controllers_file_is_unreadable(tmp_path: Path) -> None:
    [problem] = CgroupV2(tmp_path / "nowhere", "cellblock").problems()
    assert "cgroup.controllers" in problem


def test_v2_problems_when_not_writable(v2root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    [problem] = CgroupV2(v2root, "cellblock").problems()
    assert "cannot create cgroups" in problem


# ---------------------------------------------------------------------------------------------- detection


def test_detect_v2_on_a_unified_tree(v2root: Path) -> None:
    driver = detect_driver(v2root, "cellblock")
    assert isinstance(driver, CgroupV2)
    assert driver.version == 2
    assert (driver.root, driver.name) == (v2root, "cellblock")


def test_detect_v1_on_per_controller_mounts(tmp_path: Path) -> None:
    for controller in ("memory", "pids", "cpuacct", "cpu", "freezer"):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").write_text("")
    driver = detect_driver(tmp_path, "cb")
    assert isinstance(driver, CgroupV1)
    assert driver.version == 1
    assert (driver.root, driver.name) == (tmp_path, "cb")


def test_detect_hybrid_is_v1(tmp_path: Path) -> None:
    # systemd's hybrid layout: v1 controllers plus an empty unified mount below the root, not at it.
    for controller in ("memory", "pids", "cpuacct"):
        (tmp_path / controller).mkdir()
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    assert detect_driver(tmp_path, "cb").version == 1


def test_detect_nothing_usable(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()  # memory alone is not enough
    with pytest.raises(SandboxUnavailable, match="no usable cgroup hierarchy"):
        detect_driver(tmp_path, "cb")


def test_v1_problems_name_missing_controllers(tmp_path: Path) -> None:
    for controller in ("memory", "pids"):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").write_text("")
    [problem] = CgroupV1(tmp_path, "cb").problems()
    assert "cpuacct" in problem and "memory" not in problem.split(":", 1)[1]


# ---------------------------------------------------------------------------------------------- removal retries


def _fast_clock() -> Callable[[], float]:
    """A monotonic clock that advances one second per call, so deadlines pass without waiting."""
    ticks = iter(range(10**6))
    return lambda: float(next(ticks))


def test_rmdir_retries_ebusy_then_succeeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run1"
    target.mkdir()
    attempts: list[Path] = []
    real_rmdir = Path.rmdir

    def rmdir(self: Path) -> None:
        attempts.append(self)
        if len(attempts) < 3:
            raise OSError(errno.EBUSY, "Device or resource busy")
        real_rmdir(self)

    monkeypatch.setattr(Path, "rmdir", rmdir)
    cgroups._rmdir_retrying(target)
    assert len(attempts) == 3
    assert not target.exists()


def test_rmdir_of_a_missing_cgroup_is_fine(tmp_path: Path) -> None:
    cgroups._rmdir_retrying(tmp_path / "gone")


def test_rmdir_other_errors_fail_at_once(tmp_path: Path) -> None:
    target = tmp_path / "run1"
    target.mkdir()
    (target / "stray").write_text("")  # ENOTEMPTY, not EBUSY: no point retrying
    started = time.monotonic()
    with pytest.raises(SandboxFailure, match="cannot remove cgroup"):
        cgroups._rmdir_retrying(target)
    assert time.monotonic() - started < 1


def test_rmdir_ebusy_forever_fails_at_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run1"
    target.mkdir()

    def rmdir(self: Path) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(Path, "rmdir", rmdir)
    with pytest.raises(SandboxFailure, match="busy"):
        cgroups._rmdir_retrying(target, deadline_s=0.05)


# ---------------------------------------------------------------------------------------------- v1, for real

V1_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def v1() -> Iterator[CgroupV1]:
    """A real v1 driver under a name of its own; afterwards nothing of it may remain in any controller."""
    name = f"cellblock-unit-{os.getpid()}"
    driver = CgroupV1(V1_ROOT, name)
    assert driver.problems() == [], "needs root and a cgroup v1 host (memory, pids, cpuacct)"
    yield driver
    leftovers = []
    for controller in cgroups.V1_CONTROLLERS:
        top = V1_ROOT / controller / name
        if top.is_dir():
            leftovers += [str(p) for p in top.glob("*/*") if p.is_dir()]
    driver.sweep_slot("slot-test")
    for controller in cgroups.V1_CONTROLLERS:
        for path in (V1_ROOT / controller / name / "slot-test", V1_ROOT / controller / name):
            if path.is_dir():
                path.rmdir()
    assert leftovers == [], "a test left run cgroups behind"


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.005)


def _python_after_go(code: str) -> subprocess.Popen[bytes]:
    """A python3 that waits for a line on stdin before running `code`: attach first, then let it work."""
    return subprocess.Popen(
        ["/usr/bin/python3", "-c", f"import sys\nsys.stdin.readline()\n{code}"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _go(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.close()


@pytest.mark.sandbox
def test_v1_create_writes_limits_in_every_controller(v1: CgroupV1) -> None:
    run = v1.create("slot-test", "run1", 64 * 1024 * 1024, 9)
    try:
        mem = V1_ROOT / "memory" / v1.name / "slot-test" / "run1"
        assert int((mem / "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024
        if (mem / "memory.memsw.limit_in_bytes").exists():
            assert int((mem / "memory.memsw.limit_in_bytes").read_text()) == 64 * 1024 * 1024
        assert (V1_ROOT / "pids" / v1.name / "slot-test" / "run1" / "pids.max").read_text().strip() == "9"
        assert (V1_ROOT / "cpuacct" / v1.name / "slot-test" / "run1").is_dir()
    finally:
        run.remove()
    for controller in cgroups.V1_CONTROLLERS:
        assert not (V1_ROOT / controller / v1.name / "slot-test" / "run1").exists()


@pytest.mark.sandbox
def test_v1_attach_kill_all_remove(v1: CgroupV1) -> None:
    run = v1.create("slot-test", "run1", 64 * 1024 * 1024, 8)
    proc = subprocess.Popen(["sleep", "60"])
    try:
        run.attach(proc.pid)
        assert run.pids() == [proc.pid]
        membership = Path(f"/proc/{proc.pid}/cgroup").read_text()
        for controller in cgroups.V1_CONTROLLERS:
            assert any(
                controller in line.split(":")[1].split(",") and line.endswith(f"/{v1.name}/slot-test/run1")
                for line in membership.splitlines()
            ), controller
        run.kill_all()
        assert proc.wait(5) == -signal.SIGKILL
        assert run.pids() == []
        run.remove()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for controller in cgroups.V1_CONTROLLERS:
        assert not (V1_ROOT / controller / v1.name / "slot-test" / "run1").exists()


@pytest.mark.sandbox
def test_v1_remove_kills_what_is_still_running(v1: CgroupV1) -> None:
    run = v1.create("slot-test", "run1", 64 * 1024 * 1024, 8)
    proc = subprocess.Popen(["sleep", "60"])
    run.attach(proc.pid)
    run.remove()
    assert proc.wait(5) == -signal.SIGKILL
    assert not (V1_ROOT / "pids" / v1.name / "slot-test" / "run1").exists()


@pytest.mark.sandbox
def test_v1_stats_count_cpu_and_memory_after_attach(v1: CgroupV1) -> None:
    run = v1.create("slot-test", "run1", 256 * 1024 * 1024, 8)
    proc = _python_after_go(
        "import time\nb = bytearray(48 << 20)\nend = time.process_time() + 0.15\n"
        "while time.process_time() < end: pass\n"
    )
    try:
        run.attach(proc.pid)
        before = run.cpu_time_ns()
        _go(proc)
        assert proc.wait(30) == 0
        stats = run.stats()
    finally:
        run.remove()
    assert stats.cpu_time_ns - before >= 100_000_000  # ≥ 0.1 s of the 0.15 s burned after attach
    assert stats.cpu_time_ns < 5_000_000_000
    assert stats.memory_peak_bytes >= 48 << 20  # the bytearray was allocated inside the cgroup
    assert stats.memory_peak_bytes < 256 << 20
    assert stats.oom_kills == 0


@pytest.mark.sandbox
def test_v1_oom_kill_is_counted(v1: CgroupV1) -> None:
    run = v1.create("slot-test", "run1", 32 * 1024 * 1024, 8)
    proc = _python_after_go("b = bytearray(256 << 20)")
    try:
        run.attach(proc.pid)
        _go(proc)
        assert proc.wait(30) == -signal.SIGKILL
        stats = run.stats()
    finally:
        run.remove()
    assert stats.oom_kills >= 1
    assert 24 << 20 < stats.memory_peak_bytes <= 33 << 20


@pytest.mark.sandbox
def test_v1_pids_limit_hit_is_counted(v1: CgroupV1) -> None:
    run = v1.create("slot-test", "run1", 64 * 1024 * 1024, 3)
    proc = subprocess.Popen(
        ["sh", "-c", "read x; for i in 1 2 3 4 5 6; do sleep 30 & done; sleep 30"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        run.attach(proc.pid)
        _go(proc)
        # the kernel's own count of refused forks (nothing of ours reads it: the test looks at the file)
        _wait_for(lambda: (run.dirs["pids"] / "pids.events").read_text().strip() != "max 0")
        assert len(run.pids()) <= 3
    finally:
        run.remove()  # kills the shell and its sleeps
        proc.wait(5)


@pytest.mark.sandbox
def test_v1_sweep_slot_cleans_up_after_a_crashed_holder(v1: CgroupV1) -> None:
    v1.create("slot-test", "run1", 64 * 1024 * 1024, 8)
    run2 = v1.create("slot-test", "run2", 64 * 1024 * 1024, 8)
    proc = subprocess.Popen(["sleep", "60"])
    run2.attach(proc.pid)
    v1.sweep_slot("slot-test")  # as a new holder of the slot does, without the old RunCgroup objects
    assert proc.wait(5) == -signal.SIGKILL
    for controller in cgroups.V1_CONTROLLERS:
        slot = V1_ROOT / controller / v1.name / "slot-test"
        assert [p for p in slot.iterdir() if p.is_dir()] == []
