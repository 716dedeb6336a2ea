"""Warm slots: one long-lived sandbox per slot, each run cloned into fresh pid, mount and IPC namespaces.

Theory of operation
-------------------
A fresh run pays ≈ 5 ms for bubblewrap to build its namespaces and mounts. A warm slot builds them once: the
host starts ``cellblock-launch … -- bwrap … -- cellblock-slot`` (bwrap.slot_bwrap_args: the fresh layout with
`/` and `/dev` read-only and its own /dev/shm) and keeps it. The helper (slothelper/cellblock-slot.c) is the
only long-lived process inside; it holds CAP_SYS_ADMIN and CAP_SETPCAP in the sandbox's user namespace only.

One run (host side, `WarmSlot.run`), over a SOCK_SEQPACKET socketpair (wire format: slotproto.py):

1. stdin, stdout and stderr are new memfds (stdin reopened read-only), never shared between runs;
2. send 'R' (argv, env, cwd, umask, rlimits) with the three fds as SCM_RIGHTS; while the slot works on it
   (step 3), remove the last run's cgroups (kept until now: they are empty, checked when it ended) and create
   this run's (cgroups.py, name constant per slot: a counter would tell a run how many came before it);
3. the helper clones the run's init (pid 1 of fresh pid/mount/IPC namespaces), which mounts a fresh /tmp,
   /dev/shm and /proc and sends 'P'; the
   kernel attaches SCM_CREDENTIALS with the init's pid *as the host sees it* (SO_PASSCRED). Nothing of the
   run can forge it: the kernel fills it in, and the init closes the socket before the program exists;
   after 'G' the init enters a cgroup namespace rooted at the run's cgroups (/proc/self/cgroup shows "/",
   as in a fresh sandbox) and only then drops its capabilities;
4. the host writes that pid into the run's cgroups, takes the CPU baseline, restarts the memory peak and
   sends 'G' — so, as on the fresh path, only the program's own exec and run are accounted;
5. the init forks the program (pid 2) with fresh rlimits, env, cwd, umask and signal state, and exits with
   its status; the kernel then kills whatever is left in the run's pid namespace, and the helper reports 'X';
6. the host watches exactly as on the fresh path (supervisor.watch_run: total CPU, wall, output size) and
   decides with the same code (supervisor.conclude_run → outcome.decide); it checks the run cgroup is empty.

Between jobs the host sends 'W' and the helper empties /box without following links (`Sandbox.workspace`);
what it cannot remove (directories the host created as root for a job's files) the host removes as root.

Network: runs share the slot's (empty, loopback-only) network namespace in both modes. Sockets die with their
processes, except TCP connections the kernel keeps after close (TIME_WAIT for 60 s after a loopback
connection: listed in /proc/net/tcp and its port unbindable without SO_REUSEADDR). The helper reads the
namespace's own counters in /proc/net/sockstat{,6} after every run (≈ 10 µs; /proc/net/tcp itself walks the
machine-wide hash table, ≈ 1 ms) and flags any socket in 'X'; the slot is then rebuilt.

Failure policy: a slot is never repaired. EOF on the socket, a malformed or unexpected message, no 'P' in
time, no 'X' within the wall limit + 0.5 s, a run cgroup that is not empty after the run, or a failed wipe →
the slot is destroyed (every process in its cgroups and bwrap's process group SIGKILLed) and a new one is
started for the next run; a healthy one is rebuilt too after MAX_RUNS_PER_SLOT runs. A failure before 'G' (the
program never started) reruns that step once on a new slot, then on the fresh path.

Shared mode (isolation = "warm-shared", opt-in, never the default; design A of warm-pool-notes.md): the slot's
bwrap has no capabilities and its own seccomp filter (as a fresh run's), /dev/mqueue mounted, and each run is a
plain fork of the helper in the slot's *own* pid, mount and IPC namespaces — no init, no mounts, no filter to
load per run. After the run the helper (a child subreaper) SIGKILLs and reaps every process it can see, empties
/tmp, /dev/shm, /dev/mqueue and every SysV object, and compares its own nice, policy, I/O priority, affinity and
rlimits and those directories' mode/owner/xattrs with what they were at start. It reports 'X' right after the
kill (the wipe is not the run's wall time) and then 'c' with what the clean-up found: anything but "clean", or
no 'c' in CLEANUP_TIMEOUT_S → the run's verdict stands and the slot is rebuilt. The trade-off, for trusted batch work:
a run shares the slot's counters (it sees how many pids and tmpfs inodes earlier runs used), it can signal
the helper (SIGSTOP → that run ends by the wall timer; SIGKILL → the run dies with its slot; either way the
slot is rebuilt), it sees the helper as its parent, and whatever state we did not think of is not reset by
the kernel as a new namespace would reset it. Per run it saves one clone with three namespaces, a second fork,
four mounts and a seccomp load.

Pre-warmed Python (a language with ``prewarm = "python"``, setting ``prewarm_runs`` > 0, not with warm-shared;
`Prewarm`): the slot's helper is slothelper/zygote.py, started by the run's own interpreter with the run's
options and environment, which forks per run with the same steps and messages as the C helper and runs main.py
in the fork. A slot serves one interpreter profile (interpreter, options, environment) at a time, like its
ro_binds, and is rebuilt after ``prewarm_runs`` runs: the string-hash seed is fixed per interpreter.

What stays fresh: runs with network access, interactive runs (live stdin and signals), runs with their own box
(custom checkers), and requests too big for one message. A slot's read-only binds are fixed when it starts;
a run with other ro_binds restarts the slot's sandbox with those (the /box mount on the host is kept), so a
slot follows the language it serves — the pool hands out the most recently used slot first.
"""

from __future__ import annotations

import array
import contextlib
import os
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cellblock.errors import SandboxFailure
from cellblock.sandbox import slotproto
from cellblock.sandbox.bwrap import BOX_ENV, BOX_PATH, BwrapLayout, launcher_args, slot_bwrap_args
from cellblock.sandbox.cgroups import CgroupDriver, RunCgroup
from cellblock.sandbox.seccomp import SeccompProgram
from cellblock.sandbox.spec import RawResult, RunLimits, RunObserver, RunSpec
from cellblock.sandbox.supervisor import SlotIdentity, _Tail, conclude_run, watch_run

START_TIMEOUT_S = 5.0  # bwrap + helper start in ≈ 4 ms; this only bounds a broken machine
PID_TIMEOUT_S = 2.0  # 'R' → 'P': one clone and four mounts (≈ 0.3 ms)
REPORT_GRACE_S = 0.5  # after the wall limit (or a kill), how long the helper has to report 'X'
WIPE_TIMEOUT_S = 10.0  # a full /box (its inode cap) empties in well under a second
OUTER_EXIT_TIMEOUT_S = 1.0  # destroy: bwrap's outer process exits within milliseconds of its child's death
CLEANUP_TIMEOUT_S = 10.0  # shared mode, 'X' → 'c': /tmp and /dev/shm (no inode cap) full of tiny files take longest
SLOT_CGROUP = "warm"  # the slot's own processes (bwrap ×2, helper); runs are siblings named RUN_CGROUP
RUN_CGROUP = "run"
SLOT_MEMORY_BYTES = 64 << 20
SLOT_PIDS = 16  # bwrap's monitor and init, the helper, a run's init until the host moves it
RUN_EXTRA_PROCESSES = 1  # the run's init lives in the run's cgroups next to the program
RUN_UMASK = 0o022
MAX_RUNS_PER_SLOT = 10_000  # then the sandbox is rebuilt anyway (≈ 5 ms): bounds whatever state we did not think of
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
ZYGOTE_SCRIPT = Path(__file__).parent / "slothelper" / "zygote.py"
# Interpreter options a zygote reproduces exactly (each only sets a flag read at start-up, which the zygote then
# has too); anything else (-c, -m, -I, -P, -X, -W, -i, …) runs as a plain warm exec.
PYTHON_OPTIONS = frozenset({"-B", "-u", "-E", "-s", "-S", "-O", "-OO", "-b", "-bb", "-q"})
# Room in the zygote's argv memory for each program's own command line (/proc/self/cmdline), bytes.
ZYGOTE_ARGV_ROOM = "-" * 2048
# The zygote's HOME at start: a directory no run can write, so no user site from /box runs in the zygote
# (zygote.py); padded with slashes to the length of the runs' HOME, so that each program can show its own
# environment in /proc/self/environ in place.
ZYGOTE_HOME = "/dev"


@dataclass(frozen=True)
class Prewarm:
    """A pre-warmed interpreter profile: runs with equal profiles can share one zygote."""

    prefix: tuple[str, ...]  # interpreter and options, e.g. ("python3", "-B")
    env: tuple[tuple[str, str], ...]  # the runs' whole environment (start-up reads PYTHON*, LC_*, …)
    modules: tuple[str, ...] = ()  # imported before the first fork (RunSpec.prewarm_modules)

    def start_env(self) -> dict[str, str]:
        home = dict(self.env).get("HOME", "")
        return {**dict(self.env), "HOME": ZYGOTE_HOME + "/" * max(0, len(home) - len(ZYGOTE_HOME))}


def zygote_args(prewarm: Prewarm) -> list[str]:
    """The zygote's arguments after the C helper's: the modules it imports (comma-separated, "-" for none), then
    the room for the programs' command lines."""
    return [",".join(prewarm.modules) or "-", ZYGOTE_ARGV_ROOM]


def prewarm_for(spec: RunSpec, env: dict[str, str]) -> Prewarm | None:
    """The zygote profile for `spec` (its request environment `env`), or None when it must exec as usual."""
    if spec.prewarm != "python" or not spec.argv:
        return None
    options = []
    for arg in spec.argv[1:]:
        if arg in PYTHON_OPTIONS:
            options.append(arg)
            continue
        if arg.startswith("-") or not arg:
            return None  # -c, -m, -, unknown options: exec
        return Prewarm((spec.argv[0], *options), tuple(env.items()), spec.prewarm_modules)
    return None  # no script


class SlotBroken(SandboxFailure):
    """The slot cannot be trusted any more; it is destroyed. `before_go`: the program never started."""

    def __init__(self, message: str, *, before_go: bool) -> None:
        super().__init__(message)
        self.before_go = before_go


def _hard_limit(resource_id: int) -> str:
    """The slot's own rlimit: the host's hard limit (each run lowers its own; raising needs a capability)."""
    hard = resource.getrlimit(resource_id)[1]
    return str(2**64 - 1 if hard == resource.RLIM_INFINITY else hard)


def eligible(spec: RunSpec, box: Path) -> bool:
    """Whether a warm slot can run `spec` with the same semantics as a fresh sandbox."""
    return not spec.network and spec.live_input is None and spec.box_dir in (None, box)


class WarmSlot:
    """One long-lived bwrap + helper for one slot. Not thread-safe: a slot runs one program at a time."""

    def __init__(
        self,
        identity: SlotIdentity,
        layout: BwrapLayout,
        cgroups: CgroupDriver,
        seccomp: SeccompProgram,
        helper: Path,
        poll_interval_s: float,
        ro_binds: list[str],
        shared: bool = False,
        prewarm: Prewarm | None = None,
    ) -> None:
        self.identity = identity
        self.shared = shared  # isolation "warm-shared": runs share the slot's namespaces (see above)
        self.prewarm = prewarm  # the zygote's profile, or None for the C helper (never with shared)
        self.layout = layout
        self.cgroups = cgroups
        self.seccomp = seccomp
        self.helper = helper
        self.poll_interval_s = poll_interval_s
        self.ro_binds = list(ro_binds)
        self.healthy = False
        self.runs = 0
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._slot_cgroup: RunCgroup | None = None
        self._current: RunCgroup | None = None  # the running run's cgroups
        self._spent: RunCgroup | None = None  # the last run's, empty, removed while the next run starts

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start bwrap + helper and wait for its hello. Raises SandboxFailure (nothing is left running)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock = ours
        self._slot_cgroup = self.cgroups.create(self.identity.name, SLOT_CGROUP, SLOT_MEMORY_BYTES, SLOT_PIDS)
        helper_fd = os.open(ZYGOTE_SCRIPT if self.prewarm else self.helper, os.O_RDONLY | os.O_CLOEXEC)
        bpf_fd = self.seccomp.open_fd()  # the helper's (per-run filter) or, shared, bwrap's (the whole slot)
        log_fd = os.open(self.identity.io_dir / "slot.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        sock_fd = theirs.fileno()
        argv = [
            self.layout.launcher,
            str(self.identity.uid), str(self.identity.gid),
            _hard_limit(resource.RLIMIT_CPU), _hard_limit(resource.RLIMIT_CPU), _hard_limit(resource.RLIMIT_FSIZE),
            _hard_limit(resource.RLIMIT_NOFILE), _hard_limit(resource.RLIMIT_STACK), "0",
            "--",
            *slot_bwrap_args(self.layout, helper_fd=helper_fd,
                             helper_args=[str(sock_fd), "-" if self.shared else str(bpf_fd),
                                          str(self.layout.tmp_size_bytes), *(["shared"] if self.shared else []),
                                          *(zygote_args(self.prewarm) if self.prewarm else [])],
                             ro_binds=self.ro_binds, shared_seccomp_fd=bpf_fd if self.shared else None,
                             interpreter=list(self.prewarm.prefix) if self.prewarm else None,
                             env=self.prewarm.start_env() if self.prewarm else None),
        ]  # fmt: skip
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_fd,
                pass_fds=(sock_fd, helper_fd, bpf_fd),
                process_group=0,
                env={"CELLBLOCK_LAUNCH_CGROUPS": ":".join(str(p) for p in self._slot_cgroup.procs_files())},
                close_fds=True,
            )
        except OSError as exc:
            self.destroy()
            raise SandboxFailure(f"cannot start a warm slot: {exc}") from exc
        finally:
            for fd in (helper_fd, bpf_fd, log_fd):
                os.close(fd)
            theirs.close()
        try:
            hello = self._recv(START_TIMEOUT_S)
        except SlotBroken:
            hello = None
        if hello is None or hello[0] != slotproto.HELLO:
            log = (self.identity.io_dir / "slot.log").read_bytes()[:2000].decode(errors="replace").strip()
            self.destroy()
            raise SandboxFailure(f"the warm slot did not start: {log}")
        self.healthy = True

    def destroy(self) -> None:
        """SIGKILL everything of the slot and remove its cgroups. Idempotent; never raises for a dead slot."""
        self.healthy = False
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None and self._slot_cgroup is not None:
            # Inside first (bwrap's sandbox init, the helper; the runs die with their pid namespaces), so that bwrap's
            # outer process reaps its child and exits by itself: killed first, it would leave that child to the
            # machine's init, a zombie for good where init does not reap (seen on these machines).
            outer = self._proc.pid
            for pid in self._slot_cgroup.pids():
                if pid != outer:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(OUTER_EXIT_TIMEOUT_S)
        if self._proc is not None and self._proc.returncode is None:  # never a reaped pid: it may be reused
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        if self._slot_cgroup is not None:
            self._slot_cgroup.remove()  # SIGKILLs bwrap's processes and the helper until the cgroup is empty
            self._slot_cgroup = None
        for run_cgroup in (self._current, self._spent):
            if run_cgroup is not None:
                with contextlib.suppress(SandboxFailure):  # left for the next create's stale clean-up (or sweep)
                    run_cgroup.remove()
        self._current = self._spent = None
        if self._proc is not None:
            self._proc.wait()
            self._proc = None

    # ---- messages -------------------------------------------------------------------------------------------

    def _recv(self, timeout_s: float) -> tuple[bytes, int | None] | None:
        """(message, sender's host pid from SCM_CREDENTIALS) or None on timeout. EOF → SlotBroken."""
        sock = self._sock
        if sock is None:
            raise SlotBroken("the warm slot is closed", before_go=True)
        ready, _, _ = select.select([sock], [], [], timeout_s)
        if not ready:
            return None
        try:
            data, ancillary, flags, _ = sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        except OSError as exc:  # ECONNRESET: the helper died with a message of ours unread
            raise SlotBroken(f"the warm slot's helper is gone ({exc})", before_go=True) from exc
        if not data:
            raise SlotBroken("the warm slot's helper is gone", before_go=True)
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise SlotBroken("oversized message from the warm slot", before_go=True)
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                sender_pid, sender_uid, _ = _UCRED.unpack(payload[: _UCRED.size])
                if sender_uid != self.identity.uid:
                    raise SlotBroken(f"message from uid {sender_uid}", before_go=True)
                pid = sender_pid
        return data, pid

    def _send(self, data: bytes, fds: list[int] | None = None) -> None:
        sock = self._sock
        if sock is None:
            raise SlotBroken("the warm slot is closed", before_go=True)
        try:
            if fds:
                sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            else:
                sock.send(data)
        except OSError as exc:
            raise SlotBroken(f"cannot talk to the warm slot: {exc}", before_go=True) from exc

    # ---- one run ------------------------------------------------------------------------------------------

    def request(self, spec: RunSpec) -> bytes:
        """The 'R' message for `spec` (ValueError when it cannot be expressed: the caller runs it fresh)."""
        limits = spec.limits
        args = [int(a) for a in launcher_args(limits, self.identity.uid, self.identity.gid)[2:]]
        wire = slotproto.RunLimitsWire(
            cpu_soft_s=args[0], cpu_hard_s=args[1], fsize_bytes=args[2], nofile=args[3], stack_bytes=args[4],
            as_bytes=args[5],
        )  # fmt: skip
        return slotproto.encode_run(spec.argv, request_env(spec), BOX_PATH, RUN_UMASK, wire)

    def run(self, spec: RunSpec, message: bytes, observer: RunObserver | None = None) -> RawResult:
        """Run one program. Raises SlotBroken (the slot is then destroyed by the caller)."""
        self.runs += 1
        try:
            return self._run_in(spec, message, observer)
        except SandboxFailure:  # SlotBroken, or a cgroup we could not create or remove with the run's init waiting
            self.healthy = False
            raise
        finally:
            cgroup, self._current = self._current, None
            if cgroup is not None:
                if self.healthy:
                    self._spent = cgroup  # removed while the next run's init is being set up (see _run_in)
                else:
                    self._remove_run_cgroup(cgroup)

    def _remove_run_cgroup(self, cgroup: RunCgroup) -> None:
        try:
            cgroup.remove()
        except SandboxFailure:
            self.healthy = False
            raise

    def _run_in(self, spec: RunSpec, message: bytes, observer: RunObserver | None) -> RawResult:
        # memfds, not files in the io dir: a new empty one costs nothing, where truncating last run's file on
        # the data dir's filesystem costs ≈ 0.1 ms. RLIMIT_FSIZE and the size watch apply to them the same way.
        stdin_fd = stdout_fd = stderr_fd = go_w = -1
        limits = spec.limits
        try:
            source = os.memfd_create("stdin", os.MFD_CLOEXEC)
            try:
                _write_all(source, spec.stdin)
                stdin_fd = os.open(f"/proc/self/fd/{source}", os.O_RDONLY | os.O_CLOEXEC)  # read-only, offset 0
            finally:
                os.close(source)
            stdout_fd = os.memfd_create("stdout", os.MFD_CLOEXEC)
            stderr_fd = os.memfd_create("stderr", os.MFD_CLOEXEC)
            launched_ns = time.time_ns() - 10_000_000  # file mtimes use the coarse clock (a jiffy): allow 10 ms
            fds = [stdin_fd, stdout_fd, stdout_fd if spec.merge_stderr else stderr_fd]
            if self.shared:  # the run waits for go on a pipe of ours, not relayed by the helper (one hand-off less)
                go_r, go_w = os.pipe2(os.O_CLOEXEC)
                fds.append(go_r)
            try:
                self._send(message, fds)
            finally:
                if self.shared:
                    os.close(go_r)
            os.close(stdin_fd)
            stdin_fd = -1
            # While the slot clones the run's init and mounts its /tmp, /dev/shm and /proc (≈ 0.5 ms), the cgroups
            # are made here. Nothing of the run can use them before 'P' and our attach.
            cgroup = self._current = self._run_cgroup(limits)
            got = self._recv(PID_TIMEOUT_S)
            if got is None or got[0] != slotproto.PID or got[1] is None:
                raise SlotBroken(f"the warm slot did not start the run: {got!r:.100}", before_go=True)
            try:
                cgroup.attach(got[1])
            except OSError as exc:
                raise SlotBroken(f"cannot move the run into its cgroups: {exc}", before_go=True) from exc
            baseline_ns = cgroup.cpu_time_ns()
            cgroup.reset_memory_peak()
            started = time.monotonic()
            if self.shared:
                os.write(go_w, slotproto.GO)
            else:
                self._send(slotproto.GO)
            return self._supervise(cgroup, spec, (started, baseline_ns, launched_ns), (stdout_fd, stderr_fd), observer)
        finally:
            for fd in (stdin_fd, stdout_fd, stderr_fd, go_w):
                if fd >= 0:
                    os.close(fd)

    def _run_cgroup(self, limits: RunLimits) -> RunCgroup:
        """The run's cgroups: the last run's removed (its processes are gone: checked when it ended) and new ones
        made; a shared slot on v1 keeps the last run's instead while the limits are the same and it holds little
        (cgroups.ReusedV1Run)."""
        spent, self._spent = self._spent, None
        extra = 0 if self.shared else RUN_EXTRA_PROCESSES  # shared: the program is the only process we attach
        memory_bytes, pids_max = limits.memory_kib * 1024, limits.processes + extra
        if spent is not None and spent.reusable_for(memory_bytes, pids_max):
            return spent
        if spent is not None:
            self._remove_run_cgroup(spent)
        return self.cgroups.create(self.identity.name, RUN_CGROUP, memory_bytes, pids_max, reusable=self.shared)

    def _supervise(
        self,
        cgroup: RunCgroup,
        spec: RunSpec,
        marks: tuple[float, int, int],
        outputs: tuple[int, int],
        observer: RunObserver | None,
    ) -> RawResult:
        started, baseline_ns, launched_ns = marks
        sock = self._sock
        assert sock is not None
        tail = _Tail(observer, outputs, spec.limits.output_bytes) if observer else None
        watch, ended = watch_run(sock.fileno(), cgroup.kill_all, REPORT_GRACE_S, cgroup, spec, self.poll_interval_s,
                                 (started, baseline_ns), outputs, tail)  # fmt: skip
        exit_code = -signal.SIGKILL
        broken = None
        if not watch.reported:
            broken = "the warm slot did not report the killed run in time"
        else:
            try:
                got = self._recv(0)
                kind, value, err = slotproto.decode_exit(got[0] if got else b"")
            except (SlotBroken, ValueError) as exc:
                broken = f"bad report from the warm slot: {exc}"
            else:
                if kind == slotproto.X_EARLY:
                    broken = f"the run's init died before it started (status {value})"
                elif err & slotproto.T_NET:  # runs share the slot's network namespace (both modes)
                    broken = "TCP sockets of the run outlived it (TIME_WAIT): the next run would see them"
                exit_code = value
        if broken is None and cgroup.pids():
            broken = "processes of the run survived its end"  # its pid namespace (or shared: the helper) kills all
        result = conclude_run(self.identity.io_dir, self.layout.box_dir, spec, cgroup, exit_code, watch,
                              (started, ended), (baseline_ns, launched_ns), tail, outputs)  # fmt: skip
        if broken is None and self.shared:
            broken = self._cleaned()
        if broken is not None:
            self.healthy = False  # the verdict above stands (from our own timer and counters); the slot goes
        return result

    def _cleaned(self) -> str | None:
        """Shared mode: the helper's 'c' after the run — None when clean, else why the slot must go."""
        try:
            got = self._recv(CLEANUP_TIMEOUT_S)
            taint = slotproto.decode_cleaned(got[0] if got else b"")
        except (SlotBroken, ValueError) as exc:
            return f"no clean-up report from the shared slot: {exc}"
        if taint:
            found = [name for bit, name in slotproto.T_FLAGS.items() if taint & bit]
            return f"the shared slot was tampered with or not cleaned: {', '.join(found) or taint}"
        return None

    def wipe(self) -> None:
        """Empty /box (between jobs). Raises SlotBroken when the helper cannot (the slot is then destroyed)."""
        self._send(slotproto.WIPE)
        got = self._recv(WIPE_TIMEOUT_S)
        try:
            ok, err = slotproto.decode_wiped(got[0] if got else b"")
        except ValueError as exc:
            raise SlotBroken(f"bad wipe report: {exc}", before_go=True) from exc
        if not ok:
            self._wipe_as_root(err)
        box = self.layout.box_dir
        if any(os.scandir(box)):
            raise SlotBroken("/box is not empty after the wipe", before_go=True)
        # /box itself outlives the job: a run may chmod it or set user.* xattrs on it (tmpfs has them since Linux
        # 6.6), which no wipe of its contents removes. As mounted (mounts.mount_tmpfs) or the slot goes.
        st = os.stat(box, follow_symlinks=False)
        changed = stat.S_IMODE(st.st_mode) != 0o755 or st.st_uid != self.identity.uid
        if changed or os.listxattr(box, follow_symlinks=False):
            raise SlotBroken("/box itself was changed (mode, owner or xattrs)", before_go=True)

    def _wipe_as_root(self, err: int) -> None:
        """What the helper (the box's uid) could not remove: directories the host wrote as root (job files in
        subdirectories). No process of the slot's runs is alive now (each run's cgroup was checked empty), so
        nothing can swap a directory for a link meanwhile; rmtree's fd-based walk never follows links anyway.
        """
        box = self.layout.box_dir
        try:
            for entry in os.scandir(box):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        except (OSError, RecursionError) as exc:
            raise SlotBroken(f"cannot empty /box ({os.strerror(err)}, then {exc})", before_go=True) from exc


def request_env(spec: RunSpec) -> dict[str, str]:
    """The run's environment, exactly as a fresh sandbox gives it."""
    return {**BOX_ENV, **spec.env, "PWD": BOX_PATH}  # bwrap --chdir sets PWD over everything


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
