"""Our own cgroups: one per run, under a per-slot parent. cgroup v1 and v2 behind one interface.

Layout (v1, one tree per controller we use)::

    <root>/memory/<name>/slot<k>/run<n>     memory.limit_in_bytes, memsw = the same (no swap)
    <root>/pids/<name>/slot<k>/run<n>       pids.max
    <root>/cpuacct/<name>/slot<k>/run<n>    cpuacct.usage (ns)

Layout (v2, one unified tree, delegated to us: systemd ``Delegate=yes`` or root enabling controllers)::

    <root>/<name>/slot<k>/run<n>            memory.max, memory.swap.max=0, memory.oom.group=1, pids.max

Accounting comes only from these counters (never wait4 rusage of bwrap, which misses the sandboxed process).
Removal retries EBUSY: on v1 a cgroup stays busy for a moment while killed tasks finish exiting.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from abc import ABC, abstractmethod
from pathlib import Path

from cellblock.errors import SandboxFailure, SandboxUnavailable
from cellblock.sandbox.spec import CgroupStats

V1_CONTROLLERS = ("memory", "pids", "cpuacct")
# A run cgroup kept for the next run of a warm-shared slot (v1) only while its runs left at most this much charged
# to it (a /box file, page cache): the next run's memory limit covers that too, so it must stay small.
REUSE_MAX_LEFT_BYTES = 4 << 20
V2_CONTROLLERS = ("memory", "pids", "cpu")
SUPERVISOR_LEAF = "supervisor"  # where our own processes move on v2 (systemd's DelegateSubgroup does the same)


def _read_text(path: Path) -> str:
    """A small cgroup file in one read. Plain fds, not Python's buffered text I/O: several per run (≈ 15 µs each)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def _read_int(path: Path, default: int = 0) -> int:
    try:
        text = _read_text(path).strip()
    except FileNotFoundError:
        return default
    return default if text in ("", "max") else int(text)


def _read_keyed(path: Path) -> dict[str, int]:
    """A file of 'key value' lines (memory.events, cpu.stat, memory.oom_control, pids.events); {} when gone."""
    try:
        return _parse_keyed(_read_text(path))
    except FileNotFoundError:
        return {}


def _parse_keyed(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _write(path: Path, value: str) -> None:
    """One write(2), as the kernel wants a cgroup value; its errors (EBUSY, ESRCH, EINVAL) raise OSError.

    Opened like open(path, "w") (create, truncate), which cgroupfs ignores and the unit tests' fake tree needs.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _kill_pids(procs_file: Path) -> bool:
    """SIGKILL every pid listed; True when the list was already empty."""
    try:
        pids = [int(p) for p in _read_text(procs_file).split()]
    except FileNotFoundError:
        return True
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return not pids


def _rmdir_retrying(path: Path, deadline_s: float = 5.0) -> None:
    end = time.monotonic() + deadline_s
    delay = 0.0005
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > end:
                raise SandboxFailure(f"cannot remove cgroup {path}: {exc}") from exc
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


class RunCgroup(ABC):
    """The cgroup(s) of one run."""

    @abstractmethod
    def attach(self, pid: int) -> None: ...

    @abstractmethod
    def cpu_time_ns(self) -> int: ...

    @abstractmethod
    def stats(self) -> CgroupStats: ...

    @abstractmethod
    def procs_file(self) -> Path: ...

    @abstractmethod
    def procs_files(self) -> list[Path]:
        """Every cgroup.procs a process must be written to, to be in this run (one per v1 controller)."""

    @abstractmethod
    def reset_memory_peak(self) -> None:
        """Start the peak afresh (v1; on v2 the peak then includes bwrap's small setup, ~1 MiB)."""

    @abstractmethod
    def kill_all(self) -> None: ...

    @abstractmethod
    def remove(self) -> None: ...

    def reusable_for(self, memory_bytes: int, pids_max: int) -> bool:
        """Whether the next run with these limits may use this cgroup instead of a new one. Only asked of a cgroup
        the caller knows is empty (WarmSlot keeps a run's cgroup only when no process of the run survived)."""
        return False

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in _read_text(self.procs_file()).split()]
        except FileNotFoundError:
            return []

    def _kill_until_empty(self, deadline_s: float = 5.0) -> None:
        end = time.monotonic() + deadline_s
        while not _kill_pids(self.procs_file()):
            if time.monotonic() > end:
                raise SandboxFailure(f"processes survive in {self.procs_file().parent}")
            time.sleep(0.001)


class CgroupDriver(ABC):
    """Creates run cgroups under <name>/slot<k>. Detect the right driver with `detect_driver`."""

    version: int

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name

    @abstractmethod
    def problems(self) -> list[str]:
        """What is missing for this driver to work; empty when ready."""

    @abstractmethod
    def create(self, slot: str, run: str, memory_bytes: int, pids_max: int, reusable: bool = False) -> RunCgroup:
        """A new run cgroup; `reusable`: one that may serve later runs (`RunCgroup.reusable_for`), where the
        driver can keep the numbers per run (v1)."""

    @abstractmethod
    def sweep_slot(self, slot: str) -> None:
        """Kill and remove whatever a crashed predecessor left under this slot."""


class V1Run(RunCgroup):
    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs

    def attach(self, pid: int) -> None:
        for path in self.dirs.values():
            _write(path / "cgroup.procs", str(pid))

    def cpu_time_ns(self) -> int:
        return _read_int(self.dirs["cpuacct"] / "cpuacct.usage")

    def stats(self) -> CgroupStats:
        cpu = self.dirs["cpuacct"]
        mem = self.dirs["memory"]
        return CgroupStats(
            cpu_time_ns=_read_int(cpu / "cpuacct.usage"),
            memory_peak_bytes=_read_int(mem / "memory.max_usage_in_bytes"),
            oom_kills=_read_keyed(mem / "memory.oom_control").get("oom_kill", 0),
        )

    def procs_file(self) -> Path:
        any_dir = self.dirs.get("pids") or next(iter(self.dirs.values()))
        return any_dir / "cgroup.procs"

    def procs_files(self) -> list[Path]:
        return [path / "cgroup.procs" for path in self.dirs.values()]

    def reset_memory_peak(self) -> None:
        _write(self.dirs["memory"] / "memory.max_usage_in_bytes", "0")

    def kill_all(self) -> None:
        self._kill_until_empty()

    def remove(self) -> None:
        self.kill_all()
        for path in self.dirs.values():
            _rmdir_retrying(path)


class ReusedV1Run(V1Run):
    """A warm-shared slot's run cgroup, kept from run to run while the limits stay the same (`reusable_for`): no
    mkdir, limits or rmdir per run, and its files stay open (≈ 0.3 ms of CPU per run, a third of a trivial run).

    Every number stays the run's own: CPU is taken against a baseline by the caller (as for any run); the memory
    peak and the OOM kills are counted from `reset_memory_peak`, which the caller does right before the program
    starts: the peak over the usage then (what earlier runs left charged here: at most REUSE_MAX_LEFT_BYTES),
    the kills over the count then. v1 only: v2's memory.peak cannot be reset before kernel 6.12.
    """

    def __init__(self, dirs: dict[str, Path], memory_bytes: int, pids_max: int) -> None:
        super().__init__(dirs)
        self.limits = (memory_bytes, pids_max)
        self._fds: dict[str, int] = {}
        self._usage_at_start = 0
        self._oom_kills_at_start = 0

    def _fd(self, controller: str, name: str) -> int:
        key = f"{controller}/{name}"
        fd = self._fds.get(key)
        if fd is None:
            fd = self._fds[key] = os.open(self.dirs[controller] / name, os.O_RDWR | os.O_CLOEXEC)
        return fd

    def _read(self, controller: str, name: str) -> str:
        return os.pread(self._fd(controller, name), 4096, 0).decode()

    def _oom_kills(self) -> int:
        return _parse_keyed(self._read("memory", "memory.oom_control")).get("oom_kill", 0)

    def attach(self, pid: int) -> None:
        for controller in self.dirs:
            os.pwrite(self._fd(controller, "cgroup.procs"), str(pid).encode(), 0)

    def cpu_time_ns(self) -> int:
        return int(self._read("cpuacct", "cpuacct.usage"))

    def reset_memory_peak(self) -> None:
        os.pwrite(self._fd("memory", "memory.max_usage_in_bytes"), b"0", 0)  # → the usage now
        self._usage_at_start = int(self._read("memory", "memory.usage_in_bytes"))
        self._oom_kills_at_start = self._oom_kills()

    def stats(self) -> CgroupStats:
        peak = int(self._read("memory", "memory.max_usage_in_bytes"))
        return CgroupStats(
            cpu_time_ns=self.cpu_time_ns(),
            memory_peak_bytes=max(0, peak - self._usage_at_start),
            oom_kills=self._oom_kills() - self._oom_kills_at_start,
        )

    def reusable_for(self, memory_bytes: int, pids_max: int) -> bool:
        if (memory_bytes, pids_max) != self.limits:
            return False
        try:  # empty: the caller keeps a run's cgroup only once it checked that nothing of the run lives
            return int(self._read("memory", "memory.usage_in_bytes")) <= REUSE_MAX_LEFT_BYTES
        except OSError:
            return False

    def remove(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        super().remove()


class CgroupV1(CgroupDriver):
    version = 1

    def _dir(self, controller: str, *parts: str) -> Path:
        return self.root.joinpath(controller, self.name, *parts)

    def problems(self) -> list[str]:
        missing = [c for c in V1_CONTROLLERS if not (self.root / c / "cgroup.procs").exists()]
        if missing:
            return [f"cgroup v1 controllers not mounted under {self.root}: {', '.join(missing)}"]
        if not os.access(self.root / "memory", os.W_OK):
            return [f"cannot create cgroups under {self.root}/memory (run as root)"]
        return []

    def create(self, slot: str, run: str, memory_bytes: int, pids_max: int, reusable: bool = False) -> RunCgroup:
        dirs = {c: self._dir(c, slot, run) for c in V1_CONTROLLERS}
        stale = {c: p for c, p in dirs.items() if p.exists()}
        if stale:  # a killed holder of this slot left it; we hold the slot now, so nothing in it is ours
            V1Run(stale).remove()
        try:
            for path in dirs.values():
                path.mkdir(parents=True)
            mem = dirs["memory"]
            _write(mem / "memory.limit_in_bytes", str(memory_bytes))
            memsw = mem / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # only with swap accounting; without it there is nothing to swap to anyway
                _write(memsw, str(memory_bytes))
            _write(dirs["pids"] / "pids.max", str(pids_max))
        except OSError as exc:
            V1Run(dirs).remove()
            raise SandboxFailure(f"cannot create cgroup {slot}/{run}: {exc}") from exc
        return ReusedV1Run(dirs, memory_bytes, pids_max) if reusable else V1Run(dirs)

    def sweep_slot(self, slot: str) -> None:
        for controller in V1_CONTROLLERS:
            parent = self._dir(controller, slot)
            if not parent.is_dir():
                continue
            for child in parent.iterdir():
                if child.is_dir():
                    _kill_pids(child / "cgroup.procs")
                    V1Run({controller: child}).remove()


class V2Run(RunCgroup):
    def __init__(self, path: Path) -> None:
        self.path = path

    def attach(self, pid: int) -> None:
        _write(self.path / "cgroup.procs", str(pid))

    def cpu_time_ns(self) -> int:
        return _read_keyed(self.path / "cpu.stat").get("usage_usec", 0) * 1000

    def stats(self) -> CgroupStats:
        cpu = _read_keyed(self.path / "cpu.stat")
        return CgroupStats(
            cpu_time_ns=cpu.get("usage_usec", 0) * 1000,
            memory_peak_bytes=_read_int(self.path / "memory.peak"),
            oom_kills=_read_keyed(self.path / "memory.events").get("oom_kill", 0),
        )

    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def procs_files(self) -> list[Path]:
        return [self.path / "cgroup.procs"]

    def reset_memory_peak(self) -> None:
        """v2's memory.peak can only be reset per open file (kernel 6.12+): left as is (bwrap's ~1 MiB)."""

    def kill_all(self) -> None:
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            _write(kill_file, "1")
        self._kill_until_empty()

    def remove(self) -> None:
        self.kill_all()
        _rmdir_retrying(self.path)


class CgroupV2(CgroupDriver):
    version = 2

    def problems(self) -> list[str]:
        try:
            available = set((self.root / "cgroup.controllers").read_text().split())
        except OSError as exc:
            return [f"cannot read {self.root}/cgroup.controllers: {exc}"]
        missing = [c for c in V2_CONTROLLERS if c not in available]
        if missing:
            return [
                f"cgroup v2 controllers not delegated to {self.root}: {', '.join(missing)} "
                "(run under systemd with Delegate=yes, see README 'cgroup v2')"
            ]
        if not os.access(self.root, os.W_OK):
            return [f"cannot create cgroups under {self.root} (run as root or delegate the subtree)"]
        return []

    def _enable_controllers(self, path: Path) -> None:
        control = path / "cgroup.subtree_control"
        enabled = set(control.read_text().split()) if control.exists() else set()
        wanted = [c for c in V2_CONTROLLERS if c not in enabled]
        if not wanted:
            return
        value = " ".join(f"+{c}" for c in wanted)
        try:
            _write(control, value)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # "No internal processes": under systemd's Delegate=yes our own service sits in the delegated
            # cgroup itself. Move it into a leaf of its own, then controllers can be enabled for children.
            self._evacuate(path)
            _write(control, value)

    @staticmethod
    def _evacuate(path: Path) -> None:
        leaf = path / SUPERVISOR_LEAF
        leaf.mkdir(exist_ok=True)
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                _write(leaf / "cgroup.procs", pid)

    def create(self, slot: str, run: str, memory_bytes: int, pids_max: int, reusable: bool = False) -> RunCgroup:
        ours = self.root / self.name
        slot_dir = ours / slot
        path = slot_dir / run
        try:
            for level in (self.root, ours, slot_dir):
                level.mkdir(exist_ok=True)
                self._enable_controllers(level)
            if path.exists():  # left by a killed holder of this slot
                V2Run(path).remove()
            path.mkdir()
            _write(path / "memory.max", str(memory_bytes))
            _write(path / "memory.swap.max", "0")
            _write(path / "memory.oom.group", "1")  # an OOM kills the whole run, not one random process
            _write(path / "pids.max", str(pids_max))
        except OSError as exc:
            if path.exists():
                V2Run(path).remove()
            raise SandboxFailure(f"cannot create cgroup {path}: {exc}") from exc
        return V2Run(path)

    def sweep_slot(self, slot: str) -> None:
        parent = self.root / self.name / slot
        if parent.is_dir():
            for child in parent.iterdir():
                if child.is_dir():
                    V2Run(child).remove()


def detect_driver(root: Path, name: str) -> CgroupDriver:
    """v2 when the root is a unified hierarchy with controllers; v1 when per-controller mounts exist."""
    if (root / "cgroup.controllers").exists():
        return CgroupV2(root, name)
    if (root / "memory").is_dir() and (root / "pids").is_dir():
        return CgroupV1(root, name)
    raise SandboxUnavailable(f"no usable cgroup hierarchy under {root} (need v1 memory+pids+cpuacct or v2)")
