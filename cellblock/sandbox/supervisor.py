"""Run one program in a slot: launch into its cgroups, release, watch, decide, clean up.

Theory of operation (one run)
-----------------------------
Processes. The worker (root, trusted) vforks ``cellblock-launch`` with an empty environment in its own
process group; the launcher lowers rlimits on itself, drops to the slot's uid/gid with no groups and no
capabilities, sets no_new_privs and execs bwrap; bwrap builds new
user/pid/mount/net/ipc/uts/cgroup namespaces, forks the namespace's init, which forks the program. No
`preexec_fn`: Python forks through its C fast path, so this is safe in threaded workers.

Handshake. The launcher joins the run's cgroups before anything else, so every process of the run, bwrap's
included, is inside them from the start (if the worker dies mid-launch, nothing runs unlimited; bwrap takes
EOF on its block pipe as "go"). bwrap writes ``{"child-pid": N}`` to the *info* pipe, builds the mounts,
then blocks reading the *block* pipe before it execs. We wait until it sits in that read, take the cgroup's
CPU as a baseline, restart the memory peak, start our clock and release it with one byte. So bwrap's setup
is neither charged to the program's CPU/memory nor counted in its wall time.

Fds. The child inherits exactly: stdin (a file we wrote), stdout and stderr (files we opened, outside the
box, capped by RLIMIT_FSIZE), the write end of info, the read end of block, and the seccomp BPF. Nothing
else: `close_fds` is on and every fd we hold is O_CLOEXEC.

Watching. A pidfd wakes us the moment bwrap exits; between wake-ups we poll every `poll_interval_s`:
the cgroup's total CPU (all processes together — RLIMIT_CPU is only a per-process backstop), the wall
clock, and the sizes of the stdout/stderr files. Any excess → SIGKILL everything in the cgroup.

Trust. Nothing the program writes is trusted: its exit code only ever names its own verdict, its output is
read with a cap, its files are collected without following links. The host learns everything it decides
with from its own clock and the cgroup counters (see `outcome.py`).

Cleanup. After exit: read counters, SIGKILL whatever is left in the cgroup until it is empty, remove the
cgroups (retrying EBUSY). A run that cannot be cleaned up raises `SandboxFailure`; the slot is then not
reused for anything else in that job.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cellblock.errors import SandboxFailure
from cellblock.fswalk import any_file_at_least
from cellblock.sandbox.bwrap import BwrapLayout, launch_argv
from cellblock.sandbox.cgroups import CgroupDriver, RunCgroup
from cellblock.sandbox.live import LivePump
from cellblock.sandbox.outcome import Observation, decide
from cellblock.sandbox.seccomp import SeccompProgram
from cellblock.sandbox.spec import RawResult, RunObserver, RunSpec

INFO_READ_TIMEOUT_S = 10.0
LAUNCH_PROCESSES = 2  # bwrap's monitor and the namespace's init live in the run's cgroups too


@dataclass
class _Watch:
    wall_fired: bool = False
    killed_for_output: bool = False
    cpu_fired: bool = False
    cancelled: bool = False
    reported: bool = True  # the end was seen (after a kill: within the grace period)


@dataclass(frozen=True)
class SlotIdentity:
    name: str  # cgroup name of the slot, e.g. "slot3"
    uid: int
    gid: int
    io_dir: Path  # root-only: stdin/stdout/stderr files


def _read_info(fd: int) -> int | None:
    """Read bwrap's JSON from the info pipe until it parses; None if bwrap died first."""
    buffer = b""
    deadline = time.monotonic() + INFO_READ_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buffer += chunk
        try:
            return int(json.loads(buffer)["child-pid"])
        except (ValueError, KeyError):
            continue
    return None


class _Tail:
    """Forwards what the program writes to stdout/stderr while it runs, capped like the result."""

    def __init__(self, observer: RunObserver, fds: tuple[int, int], cap: int) -> None:
        self.observer = observer
        self.streams = (("stdout", fds[0]), ("stderr", fds[1]))
        self.offsets = {"stdout": 0, "stderr": 0}
        self.cap = cap

    def forward(self) -> None:
        for name, fd in self.streams:
            offset = self.offsets[name]
            size = min(os.fstat(fd).st_size, self.cap)
            if size > offset:
                data = os.pread(fd, size - offset, offset)
                self.offsets[name] = offset + len(data)
                self.observer.output(name, data)

    def poll(self) -> bool:
        """Forward new output; True when the observer wants the run stopped."""
        self.forward()
        return self.observer.cancelled()


def _wait_until_blocked(pid: int, fd: int) -> None:
    """Wait until bwrap's child sits in read(block-fd): its mounts are built, only exec is left.

    bwrap reports the child's pid before it sets up the mounts; attaching then would bill that setup (a few
    ms of system time) to the program. /proc/<pid>/syscall shows "0 0x<fd> …" while it waits in read(2).
    If the file cannot be read (the child died), the caller's attach and watcher handle it.
    """
    want = f"0 {hex(fd)} "
    deadline = time.monotonic() + INFO_READ_TIMEOUT_S
    path = f"/proc/{pid}/syscall"
    while time.monotonic() < deadline:
        try:
            with open(path) as handle:
                if handle.read().startswith(want):
                    return
        except OSError:
            return
        time.sleep(0.0001)


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _pread_capped(fd: int, cap: int) -> tuple[bytes, bool]:
    data = os.pread(fd, cap + 1, 0)
    return data[:cap], len(data) > cap


def _read_capped(path: Path, cap: int) -> tuple[bytes, bool]:
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    return data[:cap], len(data) > cap


class Supervisor:
    """Runs steps for one slot. Not thread-safe: a slot runs one program at a time."""

    def __init__(
        self,
        identity: SlotIdentity,
        layout: BwrapLayout,
        cgroups: CgroupDriver,
        seccomp: SeccompProgram,
        poll_interval_s: float,
    ) -> None:
        self.identity = identity
        self.layout = layout
        self.cgroups = cgroups
        self.seccomp = seccomp
        self.poll_interval_s = poll_interval_s
        self._runs = 0

    def run(self, spec: RunSpec, observer: RunObserver | None = None) -> RawResult:
        self._runs += 1
        limits = spec.limits
        cgroup = self.cgroups.create(
            self.identity.name, f"run{self._runs}", limits.memory_kib * 1024, limits.processes + LAUNCH_PROCESSES
        )
        try:
            return self._run_in(cgroup, spec, observer)
        finally:
            cgroup.remove()

    def _open_io(self, stdin: bytes) -> tuple[int, int, int]:
        io_dir = self.identity.io_dir
        stdin_path = io_dir / "stdin"
        stdin_path.write_bytes(stdin)
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW  # RDWR: the tail reads it
        stdin_fd = os.open(stdin_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        stdout_fd = os.open(io_dir / "stdout", flags, 0o600)
        stderr_fd = os.open(io_dir / "stderr", flags, 0o600)
        return stdin_fd, stdout_fd, stderr_fd

    def _run_in(self, cgroup: RunCgroup, spec: RunSpec, observer: RunObserver | None) -> RawResult:
        stdin_fd, stdout_fd, stderr_fd = self._open_io(spec.stdin)
        pump = None
        if spec.live_input is not None:  # interactive: stdin is a pipe we feed while it runs (live.py)
            os.close(stdin_fd)
            stdin_fd, live_w = os.pipe2(os.O_CLOEXEC)
            pump = LivePump(spec.live_input, live_w, cgroup)
        info_r, info_w = os.pipe2(os.O_CLOEXEC)
        block_r, block_w = os.pipe2(os.O_CLOEXEC)
        seccomp_fd = self.seccomp.open_fd()
        layout = self.layout if spec.box_dir is None else replace(self.layout, box_dir=spec.box_dir)
        argv = launch_argv(
            layout,
            spec.limits,
            spec.argv,
            uid=self.identity.uid,
            gid=self.identity.gid,
            info_fd=info_w,
            block_fd=block_r,
            seccomp_fd=seccomp_fd,
            env=spec.env,
            ro_binds=spec.ro_binds,
            network=spec.network,
        )
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdin_fd,
                stdout=stdout_fd,
                stderr=stdout_fd if spec.merge_stderr else stderr_fd,
                pass_fds=(info_w, block_r, seccomp_fd),
                process_group=0,
                env={"CELLBLOCK_LAUNCH_CGROUPS": ":".join(str(p) for p in cgroup.procs_files())},
                close_fds=True,
            )
        finally:
            for fd in (info_w, block_r, seccomp_fd, stdin_fd):
                os.close(fd)
        try:
            tail = _Tail(observer, (stdout_fd, stderr_fd), spec.limits.output_bytes) if observer else None
            return self._supervise(proc, cgroup, spec, info_r, (block_r, block_w), tail, (stdout_fd, stderr_fd),
                                   pump)  # fmt: skip
        finally:
            if pump is not None:
                pump.close()
            for fd in (info_r, block_w, stdout_fd, stderr_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if proc.poll() is None:
                _killpg(proc.pid)
                proc.wait()

    def _supervise(
        self,
        proc: subprocess.Popen[bytes],
        cgroup: RunCgroup,
        spec: RunSpec,
        info_r: int,
        block: tuple[int, int],
        tail: _Tail | None,
        outputs: tuple[int, int],
        pump: LivePump | None = None,
    ) -> RawResult:
        block_fd_in_child, block_w = block
        launched_ns = time.time_ns() - 10_000_000  # file mtimes use the coarse clock (a jiffy): allow 10 ms
        child_pid = _read_info(info_r)
        if child_pid is None:
            proc.wait()
            err, _ = _read_capped(self.identity.io_dir / "stderr", 4096)
            raise SandboxFailure(f"bubblewrap failed to start: {err.decode(errors='replace').strip()}")
        _wait_until_blocked(child_pid, block_fd_in_child)
        if pump is not None:
            pump.exclude = {proc.pid, child_pid}  # bwrap's monitor and the namespace init are not the program
        # Everything of the run is in its cgroups from the launcher on; bwrap's setup is not the program's:
        # count CPU from here and start the memory peak afresh.
        baseline_ns = cgroup.cpu_time_ns()
        cgroup.reset_memory_peak()
        started = time.monotonic()
        os.write(block_w, b"1")
        watch, ended = self._watch(proc, cgroup, spec, (started, baseline_ns), outputs, tail, pump)
        exit_code = proc.wait()
        box = spec.box_dir or self.layout.box_dir
        return conclude_run(self.identity.io_dir, box, spec, cgroup, exit_code, watch, (started, ended),
                            (baseline_ns, launched_ns), tail)  # fmt: skip

    def _watch(
        self,
        proc: subprocess.Popen[bytes],
        cgroup: RunCgroup,
        spec: RunSpec,
        clock: tuple[float, int],
        outputs: tuple[int, int],
        tail: _Tail | None,
        pump: LivePump | None = None,
    ) -> tuple[_Watch, float]:
        """Wait for exit, enforcing total CPU, wall time and output size. Returns when bwrap has exited."""
        pidfd = os.pidfd_open(proc.pid)
        try:

            def kill() -> None:
                cgroup.kill_all()
                _killpg(proc.pid)

            return watch_run(pidfd, kill, 5.0, cgroup, spec, self.poll_interval_s, clock, outputs, tail, pump)
        finally:
            os.close(pidfd)


def watch_run(
    wait_fd: int,
    kill: Callable[[], None],
    kill_grace_s: float,
    cgroup: RunCgroup,
    spec: RunSpec,
    poll_interval_s: float,
    clock: tuple[float, int],
    outputs: tuple[int, int],
    tail: _Tail | None,
    pump: LivePump | None = None,
) -> tuple[_Watch, float]:
    """Wait until `wait_fd` is readable (the run ended), enforcing total CPU, wall time and output size.

    Shared by the fresh path (a pidfd of bwrap) and warm slots (the helper's socket, readable when it reports).
    On an excess `kill()` runs, then we wait up to `kill_grace_s` for `wait_fd`; `watch.reported` says whether it
    became readable (False: the run, or the helper reporting it, did not end in time).
    """
    limits = spec.limits
    started, baseline_ns = clock
    cpu_limit_ns = int(limits.cpu_time_s * 1e9) + baseline_ns
    watch = _Watch()
    poller = select.poll()
    poller.register(wait_fd, select.POLLIN)
    while True:
        if pump is not None:
            pump.pump()
        now = time.monotonic()
        remaining = started + limits.wall_time_s - now
        timeout = min(poll_interval_s, max(remaining, 0.0))
        if poller.poll(timeout * 1000):
            return watch, time.monotonic()
        if time.monotonic() - started >= limits.wall_time_s:
            watch.wall_fired = True
        elif cgroup.cpu_time_ns() >= cpu_limit_ns:
            watch.cpu_fired = True
        elif max(os.fstat(fd).st_size for fd in outputs) > limits.output_bytes:
            watch.killed_for_output = True
        elif tail is not None and tail.poll():
            watch.cancelled = True
        else:
            continue
        kill()
        watch.reported = bool(poller.poll(kill_grace_s * 1000))
        return watch, time.monotonic()


def conclude_run(
    io_dir: Path,
    box: Path,
    spec: RunSpec,
    cgroup: RunCgroup,
    exit_code: int,
    watch: _Watch,
    clock: tuple[float, float],
    marks: tuple[int, int],
    tail: _Tail | None,
    output_fds: tuple[int, int] | None = None,
) -> RawResult:
    """After the run ended: counters, leftovers killed, capped outputs, the verdict (outcome.py), the result.

    Shared by the fresh path and warm slots. `clock` = (started, ended) monotonic s; `marks` = (CPU baseline ns
    of the cgroup, wall-clock ns before launch for file mtimes). Outputs are read from `output_fds` when given
    (warm slots' memfds), else from the io dir's stdout/stderr files.
    """
    started, ended = clock
    baseline_ns, launched_ns = marks
    if tail is not None:
        tail.forward()
    stats = cgroup.stats()
    cgroup.kill_all()  # a daemon that outlived main (or a killed run's stragglers)
    cap = spec.limits.output_bytes
    if output_fds is not None:
        (stdout, out_trunc), (stderr, err_trunc) = (_pread_capped(fd, cap) for fd in output_fds)
    else:
        stdout, out_trunc = _read_capped(io_dir / "stdout", cap)
        stderr, err_trunc = _read_capped(io_dir / "stderr", cap)
    cpu_s = max(0, stats.cpu_time_ns - baseline_ns) / 1e9
    # Some runtimes (Python) ignore SIGXFSZ and fail with EFBIG instead: look for a file at the limit.
    file_limit_hit = exit_code != 0 and any_file_at_least(box, spec.limits.file_size_bytes, launched_ns)
    decision = decide(
        Observation(
            exit_code=exit_code,
            wall_timer_fired=watch.wall_fired,
            cpu_time_s=cpu_s if not watch.cpu_fired else max(cpu_s, spec.limits.cpu_time_s),
            cpu_limit_s=spec.limits.cpu_time_s,
            oom_kills=stats.oom_kills,
            output_over_cap=out_trunc or err_trunc or file_limit_hit,
            killed_for_output=watch.killed_for_output,
        )
    )
    return RawResult(
        outcome=decision.outcome,
        exit_code=decision.exit_code,
        signal=decision.signal,
        cpu_time_s=round(cpu_s, 6),
        wall_time_s=round(ended - started, 6),
        memory_kib=stats.memory_peak_bytes // 1024,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=out_trunc,
        stderr_truncated=err_trunc,
        message=decision.message,
    )
