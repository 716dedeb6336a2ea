"""The machine-wide part of the sandbox: prerequisites, slot allocation, per-job /box.

A *slot* is a machine-wide resource — its uid (first_uid + k), its cgroup parent (``slot<k>``) and its work
dir — so slots are allocated with an exclusive flock on ``<slot_lock_dir>/slot<k>.lock``. Two workers, two
test processes or two CLI calls on one host therefore never share a slot, whatever their data dirs are.
When a lock is taken we first sweep what a crashed holder may have left (cgroups, a mounted /box).

Warm slots (``isolation = "warm"`` or the opt-in ``"warm-shared"``, warm.py): the host keeps up to ``warm_slots``
slots of its own, each with a long-lived sandbox and a /box tmpfs that stays mounted (wiped between jobs). Such a slot
keeps its lock while it lives, so no other process can take its uid or cgroups meanwhile; `slot()` hands out the most
recently used idle one, starts a new one while under the cap, and otherwise gives a plain slot that runs fresh. A warm
slot that breaks, or whose /box cannot be emptied, is destroyed and its lock released. `close_warm()` (also at exit)
gives the idle ones back; a killed process leaves its slots dirty and the next holder sweeps them as usual. The
launcher ties each slot's sandbox to the *thread* that started it (PR_SET_PDEATHSIG), so only the main thread gets
warm slots; other threads (self-test pools) run fresh (Celery pool processes run jobs in their main thread).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from cellblock.config import Settings
from cellblock.errors import SandboxFailure, SandboxUnavailable
from cellblock.sandbox.bwrap import BwrapLayout
from cellblock.sandbox.cgroups import CgroupDriver, detect_driver
from cellblock.sandbox.etcdir import prepare_etc
from cellblock.sandbox.launcher import build_launcher
from cellblock.sandbox.mounts import is_mount, mount_tmpfs, unmount
from cellblock.sandbox.seccomp import SeccompProgram
from cellblock.sandbox.slothelper import build_slot_helper
from cellblock.sandbox.spec import RawResult, RunObserver, RunSpec
from cellblock.sandbox.supervisor import SlotIdentity, Supervisor
from cellblock.sandbox.warm import MAX_RUNS_PER_SLOT, Prewarm, SlotBroken, WarmSlot, eligible, prewarm_for, request_env

log = logging.getLogger(__name__)
WARM_ISOLATIONS = ("warm", "warm-shared")  # both use the warm pool; warm-shared is warm.py's "shared mode"
# Isolation notes (RawResult.isolation_note) that mean a warm slot failed; other notes (not eligible, no slot free)
# are fresh by design.
NOTE_SLOT_FAILED = "warm slot failed twice: "  # SlotBroken before the program started, on two slots in a row
NOTE_NO_START = "warm slot could not start: "  # the pool could not start a new slot for the job
NOTE_NOT_MAIN_THREAD = "not the main thread: warm slots die with the thread that starts them"


def _why_not_warm(spec: RunSpec) -> str:
    """In words, why `spec` is not eligible for a warm slot (warm.eligible decides; this only names the reason)."""
    if spec.network:
        return "network access"
    if spec.live_input is not None:
        return "interactive"
    if spec.box_dir is not None:
        return "own box (custom checker)"
    return "not eligible for a warm slot"


def prerequisite_problems(settings: Settings) -> list[str]:
    """Everything that stops us from building a sandbox, each with how to fix it. Empty when ready."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("not running as root: cgroups, slot uids and /box mounts need root (run with sudo)")
    if shutil.which(settings.bwrap_path) is None:
        problems.append(f"bubblewrap not found ({settings.bwrap_path}): apt-get install bubblewrap")
    if shutil.which("gcc") is None:
        problems.append("gcc not found (it builds the small sandbox launcher): apt-get install gcc libc6-dev")
    problems += _userns_problems()
    try:
        problems += detect_driver(settings.cgroup_root, settings.cgroup_name).problems()
    except SandboxUnavailable as exc:
        problems.append(exc.message)
    try:
        from cellblock.sandbox.seccomp import build_bpf

        build_bpf()
    except Exception as exc:  # any failure here means "no seccomp", which we must refuse
        problems.append(f"cannot build the seccomp filter ({exc}): apt-get install libseccomp2")
    return problems


def _userns_problems() -> list[str]:
    for path, fix in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "sysctl -w kernel.unprivileged_userns_clone=1"),
        ("/proc/sys/user/max_user_namespaces", "sysctl -w user.max_user_namespaces=10000"),
    ):
        try:
            if int(Path(path).read_text()) == 0:
                return [f"user namespaces are disabled ({path} = 0): {fix}"]
        except (FileNotFoundError, ValueError):
            continue
    restrict = Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if restrict.exists() and restrict.read_text().strip() == "1":
        return [
            "AppArmor restricts unprivileged user namespaces: sysctl -w "
            "kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for bwrap)"
        ]
    return []


def unmount_boxes_in(slot_dir: Path) -> int:
    """Unmount every box (/box, a checker's) mounted in a slot dir; how many."""
    unmounted = 0
    for leftover in slot_dir.iterdir() if slot_dir.is_dir() else ():
        if leftover.is_dir() and is_mount(leftover):
            unmount(leftover)
            unmounted += 1
    return unmounted


class Sandbox:
    """One slot: its own uid, cgroup parent and work dir. `run()` is the one way to execute a program."""

    def __init__(self, host: SandboxHost, index: int, lock_fd: int = -1) -> None:
        self.index = index
        self.lock_fd = lock_fd  # held for the sandbox's life when it is a warm slot (the pool owns the slot)
        self.warm: WarmSlot | None = None
        self.box_clean = True  # warm: /box was wiped after the last job
        self.prewarm_failed: set[Prewarm] = set()  # profiles whose interpreter could not start here: exec instead
        self.fresh_note: str | None = None  # a warm setting's plain slot: why it is not warm (RawResult.isolation_note)
        self.uid = host.settings.first_uid + index
        self.root = host.settings.data_dir / "slots" / f"slot{index}"
        self.box = self.root / "box"
        self.io_dir = self.root / "io"
        self._host = host
        self._supervisor = Supervisor(
            SlotIdentity(name=f"slot{index}", uid=self.uid, gid=self.uid, io_dir=self.io_dir),
            BwrapLayout(
                bwrap=host.bwrap,
                launcher=str(host.launcher),
                box_dir=self.box,
                etc_dir=host.etc_dir,
                tmp_size_bytes=host.settings.tmp_size_mib * 1024 * 1024,
            ),
            host.cgroups,
            host.seccomp,
            host.settings.poll_interval_s,
        )

    def _prepare_dirs(self, sweep: bool = False) -> None:
        """Take the slot over. If its last holder did not release it cleanly (killed worker), or `sweep`, sweep
        first."""
        dirty = self._host.settings.slot_lock_dir / f"slot{self.index}.dirty"
        if sweep or dirty.exists():
            self._sweep()
        dirty.touch()
        for path, mode in ((self.root, 0o711), (self.io_dir, 0o700)):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, mode)

    def _sweep(self) -> None:
        """Kill everything of this slot's uid (it runs nothing else), remove its cgroups, unmount its boxes.

        A worker killed mid-launch can leave a bwrap child waiting forever for its dead parent, outside any
        cgroup of ours; kill(-1) as the slot's uid reaches it wherever it is.
        """
        self._host.kill_slot_processes(self.uid)
        self._host.cgroups.sweep_slot(f"slot{self.index}")
        unmount_boxes_in(self.root)

    def _remove_dirs(self) -> None:
        """Leave nothing behind: the io files and the slot dir (every /box is already unmounted)."""
        shutil.rmtree(self.io_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # a box that failed to unmount stays for the next sweep
            self.root.rmdir()
            (self._host.settings.slot_lock_dir / f"slot{self.index}.dirty").unlink()

    @contextmanager
    def workspace(self, name: str = "box") -> Iterator[Path]:
        """A fresh, empty, size-capped directory to bind at /box; unmounted (gone) afterwards.

        "box" is the job's; a custom checker gets its own ("checker") so that nothing the user's program
        left behind is ever written through or read by it.
        """
        if name == "box" and self.warm is not None:
            yield from self._warm_workspace()
            return
        path = self.root / name
        self._mount_new_box(path)
        try:
            yield path
        finally:
            unmount(path)
            path.rmdir()

    def run(self, spec: RunSpec, observer: RunObserver | None = None) -> RawResult:
        """Run `spec` in this slot: warm when the setting and the run allow it, else fresh. The result says which
        (`RawResult.isolation`) and, for a run a warm setting would have run warm, why it ran fresh."""
        warm = self.warm
        if warm is None:  # isolation=fresh, or a warm setting's pool handed out a plain slot (`fresh_note` says why)
            return self._fresh(spec, observer, self.fresh_note)
        if not eligible(spec, self.box):
            return self._fresh(spec, observer, _why_not_warm(spec))
        try:
            message = warm.request(spec)
        except ValueError:  # not expressible in one message (huge argv, NUL bytes): bwrap reports it as before
            return self._fresh(spec, observer, "request too large for a warm slot")
        runs = self._host.settings.prewarm_runs
        shared = self._host.settings.isolation == "warm-shared"  # no capabilities there: no zygote
        prewarm = prewarm_for(spec, request_env(spec)) if runs > 0 and not shared else None
        if prewarm in self.prewarm_failed:
            prewarm = None
        max_runs = runs if warm.prewarm is not None else MAX_RUNS_PER_SLOT
        if not warm.healthy or warm.ro_binds != spec.ro_binds or warm.prewarm != prewarm or warm.runs >= max_runs:
            try:
                warm = self._restart_warm(spec.ro_binds, prewarm)
            except SandboxFailure as exc:
                if prewarm is None:
                    raise
                # e.g. an interpreter too old for zygote.py: this profile is exec'd from now on, in this slot
                log.warning("pre-warmed interpreter %s did not start, exec'ing instead: %s", prewarm.prefix, exc)
                self.prewarm_failed.add(prewarm)
                warm = self._restart_warm(spec.ro_binds, None)
        try:
            result = warm.run(spec, message, observer)
        except SlotBroken as exc:
            if not exc.before_go:
                self._restart_warm(warm.ro_binds, warm.prewarm)
                raise
            # The program never started (e.g. the helper was gone): once more on a new slot, then fresh.
            warm = self._restart_warm(warm.ro_binds, warm.prewarm)
            try:
                result = warm.run(spec, message, observer)
            except SlotBroken as again:
                self._restart_warm(warm.ro_binds, warm.prewarm)
                return self._fresh(spec, observer, NOTE_SLOT_FAILED + again.message)
        if not warm.healthy:
            self._restart_warm(warm.ro_binds, warm.prewarm)  # never reused: the next run gets a new sandbox
        kind = "warm-shared" if warm.shared else "prewarmed" if warm.prewarm is not None else "warm"
        return replace(result, isolation=kind, isolation_note=None)

    def _fresh(self, spec: RunSpec, observer: RunObserver | None, note: str | None) -> RawResult:
        """The fresh path. `note`: why a run that the (warm) setting would run warm runs fresh; None under
        isolation=fresh. A slot that failed under an eligible run is a WARNING (ours; a slot that could not start
        was warned about once per job by the pool); a run not eligible or with no free slot is fresh by design: DEBUG.
        """
        if note is not None:
            failed = note.startswith(NOTE_SLOT_FAILED)
            log.log(logging.WARNING if failed else logging.DEBUG, "slot%d: a run ran fresh under isolation=%s: %s",
                    self.index, self._host.settings.isolation, note)  # fmt: skip
        return replace(self._supervisor.run(spec, observer), isolation="fresh", isolation_note=note)

    # ---- warm slots (isolation = "warm"; see warm.py) ---------------------------------------------------------

    def start_warm(self, ro_binds: list[str]) -> None:
        """Mount this slot's /box for good (wiped between jobs, not unmounted) and start its warm sandbox."""
        self._mount_new_box(self.box)
        self._restart_warm(ro_binds)

    def _mount_new_box(self, path: Path) -> None:
        """A new, empty, size-capped tmpfs at `path`. Never one already mounted there: that is a killed holder's,
        with its job's files in it. The sweep would have removed it, but it runs only when this slot's dirty marker
        is there, and that marker is machine-wide while slot dirs are per data dir: a process of another service on
        this machine may have swept its own dir for this slot and removed the marker, leaving ours."""
        settings = self._host.settings
        path.mkdir(mode=0o755, exist_ok=True)
        if is_mount(path):
            unmount(path)
        mount_tmpfs(path, settings.box_size_mib * 1024 * 1024, settings.box_inodes, self.uid, self.uid)

    def _restart_warm(self, ro_binds: list[str], prewarm: Prewarm | None = None) -> WarmSlot:
        if self.warm is not None:
            self.warm.destroy()
        host = self._host
        assert host.slot_helper is not None
        self.warm = WarmSlot(
            self._supervisor.identity,
            self._supervisor.layout,
            host.cgroups,
            host.seccomp,
            host.slot_helper,
            host.settings.poll_interval_s,
            ro_binds,
            shared=host.settings.isolation == "warm-shared",
            prewarm=prewarm,
        )
        self.warm.start()
        return self.warm

    def _warm_workspace(self) -> Iterator[Path]:
        warm = self.warm
        assert warm is not None
        self.box_clean = False
        try:
            yield self.box
        finally:
            warm = self.warm or warm  # the run may have restarted it (other ro_binds or interpreter profile)
            try:
                if warm.healthy:
                    warm.wipe()
                    self.box_clean = True
            except SlotBroken:
                warm.destroy()

    def close_warm(self) -> None:
        """Destroy the warm sandbox and unmount /box (the pool gives the slot up after this)."""
        if self.warm is not None:
            self.warm.destroy()
            self.warm = None
        if is_mount(self.box):
            unmount(self.box)
        with contextlib.suppress(OSError):
            self.box.rmdir()


class SandboxHost:
    """Checks prerequisites once and hands out slots. Refuses to exist when the sandbox cannot be built."""

    def __init__(self, settings: Settings) -> None:
        problems = prerequisite_problems(settings)
        if problems:
            raise SandboxUnavailable(
                "refusing to run code, the sandbox cannot be set up:\n  - "
                + "\n  - ".join(problems)
                + "\nRun `cellblock doctor` for details."
            )
        self.settings = settings
        self.bwrap = shutil.which(settings.bwrap_path) or settings.bwrap_path

        self.cgroups: CgroupDriver = detect_driver(settings.cgroup_root, settings.cgroup_name)
        shared = settings.data_dir / "shared"
        shared.mkdir(parents=True, exist_ok=True)
        for path in (settings.data_dir, settings.data_dir / "slots", shared):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o711)
        self.etc_dir = prepare_etc(shared)
        self.seccomp = SeccompProgram.install(shared)
        self.launcher = build_launcher(shared)
        settings.slot_lock_dir.mkdir(parents=True, exist_ok=True)
        self.slot_helper: Path | None = None
        self._warm_idle: list[Sandbox] = []  # most recently used last
        self._warm_count = 0
        self._warm_lock = threading.Lock()
        if settings.isolation in WARM_ISOLATIONS:
            self.slot_helper = build_slot_helper(shared)
            atexit.register(self.close_warm)

    def slot(self) -> contextlib.AbstractContextManager[Sandbox]:
        """Hold a free slot for the duration of the block (blocks while all are busy)."""
        if self.settings.isolation in WARM_ISOLATIONS:
            return self._warm_slot()
        return self._fresh_slot()

    @contextmanager
    def _warm_slot(self) -> Iterator[Sandbox]:
        """An idle warm slot of this process (most recently used first), a new one up to `warm_slots`, or else
        a plain slot that runs fresh. A warm slot keeps its machine-wide lock while it lives.

        Only the main thread gets warm slots. A slot's sandbox dies with the thread that started it
        (PR_SET_PDEATHSIG), so one started by a short-lived thread — the self-tests' thread pool in a worker's
        main process or in `cellblock languages` — would die under the pool's feet, leave its bwrap a zombie of
        ours, and hold its slot's lock (and uid) for nothing. Celery pool processes run jobs in their main thread.
        """
        if threading.current_thread() is not threading.main_thread():
            with self._fresh_slot() as fresh:
                fresh.fresh_note = NOTE_NOT_MAIN_THREAD
                yield fresh
            return
        with self._warm_lock:
            sandbox = self._warm_idle.pop() if self._warm_idle else None
            create = sandbox is None and self._warm_count < self.settings.warm_slots
            if create:
                self._warm_count += 1
        if sandbox is None and not create:
            with self._fresh_slot() as fresh:
                fresh.fresh_note = f"no warm slot free (all {self.settings.warm_slots} busy)"
                yield fresh
            return
        if sandbox is None:
            try:
                sandbox = self._new_warm_sandbox()
            except SandboxFailure as exc:  # e.g. a kernel that refuses the helper's namespaces: run fresh
                log.warning("cannot start a warm slot, this job runs fresh: %s", exc.message)
                with self._fresh_slot() as fresh:
                    fresh.fresh_note = NOTE_NO_START + exc.message  # logged above, once per job: not again per run
                    yield fresh
                return
        keep = False
        try:
            yield sandbox
            keep = sandbox.warm is not None and sandbox.warm.healthy and sandbox.box_clean
        finally:
            if keep:
                with self._warm_lock:
                    self._warm_idle.append(sandbox)
            else:
                self._drop_warm(sandbox)

    def _new_warm_sandbox(self) -> Sandbox:
        fd, index = self._lock_a_slot()
        sandbox = Sandbox(self, index, fd)
        try:
            sandbox._prepare_dirs()
            sandbox.start_warm([])
        except BaseException:
            self._drop_warm(sandbox)
            raise
        return sandbox

    def _drop_warm(self, sandbox: Sandbox) -> None:
        try:
            sandbox.close_warm()
            sandbox._remove_dirs()
        finally:
            os.close(sandbox.lock_fd)
            with self._warm_lock:
                self._warm_count -= 1

    def close_warm(self) -> None:
        """Destroy every idle warm slot of this process and give their slots back (tests, shutdown)."""
        with self._warm_lock:
            idle, self._warm_idle = self._warm_idle, []
        for sandbox in idle:
            self._drop_warm(sandbox)

    @contextmanager
    def _fresh_slot(self) -> Iterator[Sandbox]:
        fd, index = self._lock_a_slot()
        try:
            sandbox = Sandbox(self, index)
            sandbox._prepare_dirs()
            try:
                yield sandbox
            finally:
                sandbox._remove_dirs()
        finally:
            os.close(fd)

    def kill_slot_processes(self, uid: int) -> None:
        """SIGKILL every process of `uid`: the launcher drops to it and runs kill(-1) (never itself, never init)."""
        kill = shutil.which("kill") or "/bin/kill"
        subprocess.run([str(self.launcher), str(uid), str(uid), "2", "3", "1048576", "64", "8388608", "0", "--", kill,
                        "-KILL", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=10,
                       env={})  # fmt: skip

    def sweep_idle_slots(self) -> int:
        """Clean every slot no process holds (after killed workers). Returns how many were swept."""
        swept = 0
        for index in range(self.settings.max_slots):
            path = self.settings.slot_lock_dir / f"slot{index}.lock"
            if not path.exists():
                continue
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                sandbox = Sandbox(self, index)
                sandbox._prepare_dirs(sweep=True)  # one sweep, dirty marker or not
                sandbox._remove_dirs()
                swept += 1
            finally:
                os.close(fd)
        return swept

    def unmount_stopped_boxes(self) -> int:
        """Unmount every /box (or checker box) left under this data dir's slot dirs. Only for a caller that has
        stopped every process using this data dir (`cellblock serve` and `cellblock folder` at their stop): such
        a mount is a killed worker's whatever the slot's machine-wide lock says. `sweep_idle_slots` skips a slot
        another service on the machine holds at that moment, and with it our data dir's leftover (a warm slot
        keeps its /box mounted for its life). Returns how many were unmounted."""
        return sum(unmount_boxes_in(slot_dir) for slot_dir in (self.settings.data_dir / "slots").glob("slot*"))

    def _lock_a_slot(self) -> tuple[int, int]:
        """The lowest free slot, waiting while every one is busy. Waiting means looking at all of them again,
        soon (1 ms, doubling up to 50 ms), never a blocking lock on one: a warm slot holds its lock for its life, so
        a wait on slot 0 could last as long as the process holding it, while other slots come free."""
        limit = self.settings.max_slots
        delay = 0.001
        while True:
            for index in range(limit):
                path = self.settings.slot_lock_dir / f"slot{index}.lock"
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return fd, index
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
