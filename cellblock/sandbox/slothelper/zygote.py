# ruff: noqa: E402
"""cellblock zygote: a pre-warmed Python interpreter as the helper of a warm slot (design "ZB" of
warm-pool-notes.md). It speaks the C helper's wire protocol (cellblock-slot.c "WIRE FORMAT", slotproto.py).

Theory of operation
-------------------
The host starts it in place of cellblock-slot, as ``INTERPRETER [OPTIONS] /proc/self/fd/N SOCK BPF TMP_SIZE``
with the run's own interpreter, options and environment (warm.Prewarm), so the interpreter already did
everything `python3 main.py` does before main.py's first line: site, stdio, codecs, the import machinery.
It is *not* imported by the host; it runs only inside a slot.

One run ('R' with stdin/stdout/stderr as SCM_RIGHTS):
  zygote  unshare(CLONE_NEWPID), fork → init, setns back to the slot's pid namespace (so that the next run can
          unshare again: no process has to sit between the zygote and the init)
  init    pid 1 of the run: unshare(NEWNS | NEWIPC), pdeathsig, setsid, private propagation, fresh /tmp,
          /dev/shm and /proc (as the C helper), sends 'P' (the kernel attaches its host pid), drops the socket,
          waits for go; enters a cgroup namespace, drops every capability, no_new_privs, the seccomp filter,
          blocks every signal (pid 1 never acts on them) and forks
  program (pid 2): empty signal mask, dumpable again, stdio from the request, every other fd closed, umask,
          cwd, rlimits, exactly the request's environment, sys.argv / sys.orig_argv / sys.path[0] / the user
          site as a bare start computes them, every module the zygote imported for itself removed from
          sys.modules but the language's preloaded ones (`prewarm_modules`, imported before the first fork:
          the run's own copy; dropped too when the script's directory or PYTHONPATH could shadow one; a
          preloaded `random` reseeds itself in its at-fork hook), a new ``__main__`` module; then serve()
          *returns* and the module level below compiles and runs main.py in it (one frame of ours below it, cut
          from tracebacks), and ends the way Py_FinalizeEx would as far as a program can tell (`_finish`:
          threads joined, atexit, stdio flushed with status 120 on failure, the program's modules and __main__
          collected, SIGINT death after an uncaught KeyboardInterrupt) — without tearing down the zygote's own
          modules, which would copy every page of its heap (≈ 6 ms per run).
  The init waits for the program and exits with its status (128+N for a signal), which the zygote reports in
  'X'. The kernel kills whatever is left in the run's pid namespace. Forks, not a raw clone(): a clone from
  Python would skip the interpreter's and libc's fork bookkeeping.

Why so few steps are Python: every object the zygote owns that a fork touches (a reference count is a write)
is a copy-on-write page fault in the run; the zygote freezes its objects out of the collector's reach
(gc.freeze) and the per-run paths do little.

Security: the zygote never imports from sys.path[0] (/proc/self/fd) or /box: the path entry is dropped before
any import, so is every entry outside /usr (a PYTHONPATH; each program gets them back), and it is started with
HOME pointing nowhere, so a user site directory that an earlier run of the job wrote into /box cannot run code
in the (capable) zygote; each program adds the user site itself, as a bare start does. The zygote is not
dumpable and lives outside every run's pid namespace. Anything unexpected → the zygote exits 2 → EOF → the host
destroys the slot.

Known differences from `python3 main.py`: README, "Pre-warmed Python".
"""

import sys

_BASELINE = frozenset(sys.modules)  # what a bare `python3 main.py` has when main.py's first line runs
if sys.path:
    del sys.path[0]  # /proc/self/fd: never import from there (nor from /box) in the zygote
_PROGRAM_PATH = list(sys.path)  # what each program starts from (become_program)
sys.path[:] = [entry for entry in sys.path if entry.startswith("/usr/")]  # the zygote: the read-only system only
sys.path_importer_cache.clear()
# The language's prewarm_modules (argv[4], comma-separated, "-" for none), imported before anything of ours, from
# the standard library's directories only (see Security): what they pull in is what a program may keep
# (_PRELOADED). One that fails to import is simply not there; its program imports it (and fails) itself.
for _name in sys.argv[4].split(",") if sys.argv[4] != "-" else ():
    try:
        __import__(_name)
    except Exception:  # noqa: S112 - any failure: not preloaded, nothing else
        continue
_PRELOADED = frozenset(sys.modules) - _BASELINE
_PRELOADED_TOP = frozenset(name.partition(".")[0] for name in _PRELOADED)

import _socket
import atexit
import contextlib
import ctypes
import gc
import os
import select
import signal

# ---- constants (linux/x86-64 and aarch64 share these) --------------------------------------------------------
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWPID = 0x20000, 0x02000000, 0x08000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, SECCOMP_MODE_FILTER = 47, 4, 2
RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_STACK, RLIMIT_CORE, RLIMIT_NOFILE, RLIMIT_AS = 0, 1, 3, 4, 7, 9
SIGKILL = 9
MAX_MESSAGE = 128 * 1024
X_EXITED, X_EARLY = 0, 1
T_NET = 32  # 'X' err: TCP sockets outlived the run (slotproto.T_NET)
COVERED_PROC = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")

_libc = ctypes.CDLL(None, use_errno=True)
_run_exitfuncs = atexit._run_exitfuncs  # the interpreter's one registry (the module is built in)
_collect = gc.collect
_ulong = ctypes.c_ulong


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(ctypes.c_int(option), _ulong(arg), _ulong(0), _ulong(0), _ulong(0)), f"prctl {option}")


def _mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    _check(_libc.mount(source, target, fstype, _ulong(flags), data), f"mount {target!r}")


def _setrlimit(resource: int, soft: int, hard: int) -> None:
    _check(_libc.setrlimit(ctypes.c_int(resource), ctypes.byref(_Rlimit(soft, hard))), f"setrlimit {resource}")


# ---- start ---------------------------------------------------------------------------------------------------
_SOCK_FD, _BPF_FD, _TMP_SIZE = (int(a) for a in sys.argv[1:4])  # then the modules and ZYGOTE_ARGV_ROOM (warm.py)
_PREFIX = sys.orig_argv[: len(sys.orig_argv) - len(sys.argv)]  # the interpreter and its options
_sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, _SOCK_FD)
_bpf = b""
while chunk := os.read(_BPF_FD, 65536):
    _bpf += chunk
os.close(_BPF_FD)
if not _bpf or len(_bpf) % 8:
    sys.exit("cellblock-zygote: bad seccomp program")
_bpf_buffer = ctypes.create_string_buffer(_bpf, len(_bpf))
_fprog = _Fprog(len(_bpf) // 8, ctypes.addressof(_bpf_buffer))
with os.scandir("/proc/self/fd") as _entries:  # the script's own fd (and anything else bwrap passed on)
    for _entry in list(_entries):
        if int(_entry.name) > 2 and int(_entry.name) != _SOCK_FD:
            with contextlib.suppress(OSError):
                os.close(int(_entry.name))
_prctl(PR_SET_PDEATHSIG, SIGKILL)
_prctl(PR_SET_DUMPABLE, 0)
# The zygote lives as pid 1 of a pid namespace of its own user namespace (bwrap --disable-userns nests one under
# the slot's): only there may it setns() its children's pid namespace back after each run's unshare.
_check(_libc.unshare(ctypes.c_int(CLONE_NEWPID)), "unshare(CLONE_NEWPID)")
_zygote = os.fork()
if _zygote:
    os.close(_sock.detach())  # EOF for the host as soon as the zygote is gone
    os._exit(os.waitstatus_to_exitcode(os.waitpid(_zygote, 0)[1]) & 0xFF)
_prctl(PR_SET_PDEATHSIG, SIGKILL)
_PIDNS_FD = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)  # ours, for setns after each run's fork
with open("/proc/self/stat", "rb") as _stat:  # fields 48, 49: where the kernel reads /proc/<pid>/cmdline from
    _STAT = [int(field) for field in _stat.read().rsplit(b")", 1)[1].split()[45:49]]
_ARGS, _ENVIRON = _STAT[0:2], _STAT[2:4]  # arg_start, arg_end; env_start, env_end


def _set_cmdline(argv: list[str], area: list[int] = _ARGS, exact: bool = False) -> None:
    """Show `argv` in /proc/self/cmdline, as the C helper shows "bwrap" for the init (padded with NUL bytes);
    left alone when it does not fit (or, `exact`, does not fill `area` exactly)."""
    data = b"".join(arg.encode("utf-8", "surrogateescape") + b"\0" for arg in argv)
    start, end = area
    if exact and len(data) != end - start:
        return
    if len(data) <= end - start:
        ctypes.memset(start, 0, end - start)
        ctypes.memmove(start, data, len(data))


compile("x: int = 1\n", "<warm-up>", "exec")  # builds the AST node types once (≈ 0.7 ms per run otherwise)


class Request:
    def __init__(self, data: bytes, fds: list[int]) -> None:
        if len(data) < 64 or data[:4] != b"R\0\0\0" or len(fds) != 3:
            raise ValueError("bad R")
        self.umask = int.from_bytes(data[4:8], "little")
        argc = int.from_bytes(data[8:12], "little")
        envc = int.from_bytes(data[12:16], "little")
        self.limits = [int.from_bytes(data[16 + 8 * i : 24 + 8 * i], "little") for i in range(6)]
        strings = data[64:].split(b"\0")
        if strings[-1] != b"" or len(strings) != 2 + argc + envc:
            raise ValueError("bad R strings")
        decoded = [s.decode("utf-8", "surrogateescape") for s in strings[:-1]]
        self.cwd = decoded[0]
        self.argv = decoded[1 : 1 + argc]
        self.env = dict(item.split("=", 1) for item in decoded[1 + argc :])
        self.fds = fds
        if self.argv[: len(_PREFIX)] != _PREFIX or len(self.argv) <= len(_PREFIX):
            raise ValueError("the request is not for this interpreter")


def _send(data: bytes) -> None:
    if _sock.send(data) != len(data):
        raise OSError("short send")


def _die(what: str) -> None:
    os.write(2, f"cellblock-zygote(run): {what}\n".encode(errors="replace"))
    os._exit(2)


def _mount_fresh() -> None:
    _mount(None, b"/", None, MS_REC | MS_PRIVATE, None)
    options = f"size={_TMP_SIZE},mode=0755".encode()
    _mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, options)
    _mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, options)
    _mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    for path in COVERED_PROC:
        if os.path.lexists(path):
            _mount(path.encode(), path.encode(), None, MS_BIND | MS_REC, None)
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
            _mount(None, path.encode(), None, flags, None)


def _drop_everything() -> None:
    for cap in range(64):
        dropped = _libc.prctl(ctypes.c_int(PR_CAPBSET_DROP), _ulong(cap), _ulong(0), _ulong(0), _ulong(0)) == 0
        if not dropped and ctypes.get_errno() != 22:  # EINVAL: past the last capability
            _check(-1, "PR_CAPBSET_DROP")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data), "capset")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _check(
        _libc.prctl(ctypes.c_int(PR_SET_SECCOMP), _ulong(SECCOMP_MODE_FILTER), ctypes.byref(_fprog),
                    _ulong(0), _ulong(0)),
        "PR_SET_SECCOMP",
    )  # fmt: skip


def _status_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _init(req: Request, go_read: int, go_write: int) -> Request:
    """pid 1 of the run. Returns only in the program (pid 2)."""
    try:
        os.close(go_write)
        os.close(_PIDNS_FD)
        _prctl(PR_SET_PDEATHSIG, SIGKILL)
        _check(_libc.unshare(ctypes.c_int(CLONE_NEWNS | CLONE_NEWIPC)), "unshare")
        _set_cmdline(["bwrap"])  # as the init of a fresh sandbox (and the C helper's)
        os.setsid()
        _mount_fresh()
        _send(b"P")  # the kernel attaches our pid as the host sees it
        os.close(_sock.detach())  # nothing of the run holds the socket after this
        if os.read(go_read, 1) != b"g":
            os._exit(2)
        os.close(go_read)
        _check(_libc.unshare(ctypes.c_int(CLONE_NEWCGROUP)), "unshare(CLONE_NEWCGROUP)")
        _drop_everything()
        everything = signal.valid_signals() - {SIGKILL, 19}
        signal.pthread_sigmask(signal.SIG_BLOCK, everything)  # pid 1 acts on no signal; the program unblocks
        program = os.fork()
    except BaseException as exc:
        _die(f"init: {exc!r}")
        raise
    if program == 0:
        return req
    try:
        for fd in req.fds:
            os.close(fd)
        os.closerange(0, 0x7FFFFFFF)
        while True:
            done, status = os.waitpid(-1, 0)
            if done == program:
                os._exit(_status_code(status))  # the kernel then kills the rest of this pid namespace
    finally:
        os._exit(2)


def _handle_run(req: Request) -> Request | None:
    go_read, go_write = os.pipe()
    # The next child is pid 1 of a new pid namespace; then our own children's namespace is ours again (a second
    # unshare(CLONE_NEWPID) would fail while it is not), so no process sits between the zygote and the init.
    _check(_libc.unshare(ctypes.c_int(CLONE_NEWPID)), "unshare(CLONE_NEWPID)")
    try:
        init = os.fork()
    except BaseException:
        _check(_libc.setns(_PIDNS_FD, ctypes.c_int(CLONE_NEWPID)), "setns")
        raise
    if init == 0:
        return _init(req, go_read, go_write)
    _check(_libc.setns(_PIDNS_FD, ctypes.c_int(CLONE_NEWPID)), "setns")
    os.close(go_read)
    for fd in req.fds:
        os.close(fd)
    pidfd = os.pidfd_open(init)
    early = False
    ready, _, _ = select.select([_sock.fileno(), pidfd], [], [])
    if pidfd in ready:  # the init died before go
        early = True
    else:
        if _sock.recv(16) != b"G":
            os.kill(init, SIGKILL)
            sys.exit("cellblock-zygote: expected G")
        try:
            os.write(go_write, b"g")
        except OSError:
            early = True
    os.close(go_write)
    os.close(pidfd)
    _, status = os.waitpid(init, 0)
    report = (X_EARLY, status) if early else (X_EXITED, _status_code(status))
    net = _tcp_sockets_left()
    _send(b"X" + bytes([report[0], 0, 0]) + b"".join(v.to_bytes(4, "little", signed=True) for v in (report[1], net)))
    return None


def _tcp_sockets_left() -> int:
    """T_NET when a TCP or UDP socket is left in the slot's network namespace (as cellblock-slot.c's
    tcp_sockets_left): runs share it, and a TCP connection closed by the run can stay (TIME_WAIT) for the next.
    /proc/net/sockstat{,6} count per namespace (≈ 5 µs); /proc/net/tcp walks the machine-wide table (≈ 1 ms)."""
    for index, table in enumerate(("/proc/net/sockstat", "/proc/net/sockstat6")):
        try:
            fd = os.open(table, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if index == 1:
                continue  # no IPv6
            return T_NET
        except OSError:
            return T_NET
        try:
            data = os.read(fd, 1024)
        except OSError:
            return T_NET
        finally:
            os.close(fd)
        found = 0
        for line in data.decode("ascii", "replace").splitlines():
            words = line.split()
            if words and words[0] in ("TCP:", "TCP6:", "UDP:", "UDP6:"):
                found += 1
                counts = dict(zip(words[1::2], words[2::2], strict=False))
                if counts.get("inuse") != "0" or counts.get("tw", "0") != "0":  # orphan is machine-wide
                    return T_NET
        if found != 2:  # TCP + UDP, or TCP6 + UDP6
            return T_NET
    return 0


def _wipe(directory: int) -> None:
    """Empty the directory open as `directory` without following links (as the C helper's wipe_tree). A tree too
    deep for the recursion limit fails the wipe: the host then empties /box as root, or rebuilds the slot."""
    for entry in list(os.scandir(directory)):
        if entry.is_dir(follow_symlinks=False):
            try:
                os.rmdir(entry.name, dir_fd=directory)
                continue
            except OSError:
                pass
            os.chmod(entry.name, 0o700, dir_fd=directory, follow_symlinks=False)
            child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            try:
                _wipe(child)
            finally:
                os.close(child)
            os.rmdir(entry.name, dir_fd=directory)
        else:
            os.unlink(entry.name, dir_fd=directory)


def _handle_wipe() -> None:
    err = 0
    try:
        box = os.open("/box", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            _wipe(box)
        finally:
            os.close(box)
    except OSError as exc:
        err = exc.errno or 1
    except RecursionError:
        err = 40  # ELOOP
    _send(b"w" + bytes([err == 0, 0, 0]) + err.to_bytes(4, "little", signed=True))


def serve() -> Request:
    """The zygote's loop. Returns only in a run's program (pid 2)."""
    gc.collect()
    gc.freeze()  # the zygote's objects: never traversed by a run's collections (no copy-on-write of their pages)
    _send(b"H")
    while True:
        data, ancillary, flags, _ = _sock.recvmsg(MAX_MESSAGE + 1, _socket.CMSG_SPACE(4 * 4), _socket.MSG_CMSG_CLOEXEC)
        fds: list[int] = []
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += [int.from_bytes(payload[i : i + 4], "little") for i in range(0, len(payload) - 3, 4)]
        if not data:
            os._exit(0)
        if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
            sys.exit("cellblock-zygote: oversized message")
        if data[:1] == b"R":
            program = _handle_run(Request(data, fds))
            if program is not None:
                return program
            continue
        if fds or len(data) != 1:
            sys.exit("cellblock-zygote: bad message")
        if data == b"W":
            _handle_wipe()
        elif data == b"Q":
            os._exit(0)
        else:
            sys.exit("cellblock-zygote: unexpected message")


def become_program(req: Request) -> tuple[str, str]:
    """Turn this fork into `python3 main.py` as far as the program can tell. Returns (path as given, path)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    _prctl(PR_SET_DUMPABLE, 1)  # /proc/self/* belongs to the program again, as after an exec
    _set_cmdline(req.argv)
    # /proc/self/environ: the run's own (its HOME differs from the zygote's only in the value, of equal length)
    _set_cmdline([f"{key}={value}" for key, value in req.env.items()], _ENVIRON, exact=True)
    high = [os.dup(fd) for fd in req.fds]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    os.closerange(3, 0x7FFFFFFF)
    os.umask(req.umask)
    os.chdir(req.cwd)
    limits = req.limits
    _setrlimit(RLIMIT_CPU, limits[0], limits[1])
    _setrlimit(RLIMIT_FSIZE, limits[2], limits[2])
    _setrlimit(RLIMIT_NOFILE, limits[3], limits[3])
    _setrlimit(RLIMIT_STACK, limits[4], limits[4])
    _setrlimit(RLIMIT_CORE, 0, 0)
    if limits[5]:
        _setrlimit(RLIMIT_AS, limits[5], limits[5])
    for key in [k for k in os.environ if k not in req.env]:
        del os.environ[key]
    for key, value in req.env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    given = req.argv[len(_PREFIX)]
    path = os.path.abspath(given)
    script_dir = None if sys.flags.isolated or sys.flags.safe_path else os.path.dirname(os.path.realpath(given))
    keep = _BASELINE if _preloads_shadowed(script_dir) else _BASELINE | _PRELOADED
    for name in [n for n in sys.modules if n not in keep]:
        del sys.modules[name]
    sys.argv[:] = req.argv[len(_PREFIX) :]
    sys.orig_argv[:] = req.argv
    sys.path[:] = _PROGRAM_PATH
    if script_dir is not None:
        sys.path.insert(0, script_dir)
    site = sys.modules.get("site")
    if site is not None and not sys.flags.no_user_site:
        _add_user_site(site)
    return given, path


def _preloads_shadowed(script_dir: str | None) -> bool:
    """Whether a bare start could import one of the preloaded modules from elsewhere: the script's directory and
    PYTHONPATH come before the standard library on sys.path. Then the run starts without them (as a bare start
    would: it imports whatever it finds). A name alone decides (file, package or directory): safe, and cheap."""
    if not _PRELOADED:
        return False
    if not sys.flags.ignore_environment and os.environ.get("PYTHONPATH"):
        return True
    if script_dir is None:
        return False
    try:
        entries = os.listdir(script_dir)
    except OSError:
        return True
    return any(entry.partition(".")[0] in _PRELOADED_TOP for entry in entries)


def _add_user_site(site: object) -> None:
    """What site.main() did at start with HOME=/box: the user site directory if it exists, before the others."""
    site.USER_BASE = None  # type: ignore[attr-defined]
    site.USER_SITE = None  # type: ignore[attr-defined]
    user_site = site.getusersitepackages()  # type: ignore[attr-defined]
    if site.ENABLE_USER_SITE and os.path.isdir(user_site):  # type: ignore[attr-defined]
        system = set(site.getsitepackages())  # type: ignore[attr-defined]
        index = next((i for i, p in enumerate(sys.path) if p in system), len(sys.path))
        sys.path.insert(index, user_site)
        site.addsitedir(user_site)  # type: ignore[attr-defined]


def _flush_std() -> bool:
    """flush_std_files() of Py_FinalizeEx: False when one failed (the exit status becomes 120)."""
    ok = True
    for stream in (sys.stdout, sys.stderr):
        if stream is None or getattr(stream, "closed", False):
            continue
        try:
            stream.flush()
        except Exception:
            ok = False
            if stream is sys.stdout:
                error = sys.exc_info()[1]
                hook_args = _Unraisable(type(error), error, error.__traceback__ if error else None, stream)
                sys.unraisablehook(hook_args)  # type: ignore[arg-type]
    return ok


class _Unraisable:
    """sys.UnraisableHookArgs for the hook (its type cannot be built from Python)."""

    def __init__(self, exc_type: object, exc_value: object, exc_traceback: object, obj: object) -> None:
        self.exc_type, self.exc_value, self.exc_traceback, self.obj = exc_type, exc_value, exc_traceback, obj
        self.err_msg = None


def _finish(status: int, interrupted: bool = False) -> None:
    """What Py_FinalizeEx does that a program can observe — threads joined, atexit, stdio flushed (status 120 if
    that fails), the program's own modules and __main__ torn down (their objects' __del__ and finalizers), a
    collection — then exit. Not the teardown of the interpreter's own modules: that would write to every object
    the zygote owns and copy the whole heap (≈ 6 ms per run), and nothing of the program lives there."""
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    _run_exitfuncs()
    flushed = _flush_std()
    # Py_FinalizeEx drops the modules and lets the collector free them (finalizers and __del__ run while the
    # globals they use still exist); so do we, for what the program imported and its __main__.
    for name in [*reversed([n for n in sys.modules if n not in _START_MODULES]), "__main__"]:
        sys.modules.pop(name, None)
    sys.last_type = sys.last_value = sys.last_traceback = None
    for name in ("_main", "_code"):
        globals().pop(name, None)
    _collect()
    flushed = _flush_std() and flushed
    if interrupted:  # a bare run that ended in KeyboardInterrupt dies of SIGINT after finalizing
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status if flushed else 120)


def _exit_status(exc: SystemExit) -> int:
    """_Py_HandleSystemExit: the status for an uncaught SystemExit (printing a non-integer code)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        if not -(2**63) <= code < 2**63:
            return -1  # PyLong_AsLong overflows
        low = code & 0xFFFFFFFF  # (int)PyLong_AsLong(code)
        return low - 2**32 if low >= 2**31 else low
    with contextlib.suppress(Exception):  # as CPython: a broken stderr does not change the status
        sys.stderr.write(str(code) + "\n")
    return 1


def _exec_instead(argv: list[str]) -> None:
    """A main.py this fork cannot run the way python3 would: exec python3 itself (the run is already fully set
    up: rlimits, seccomp, environment, fds), with the signal dispositions an exec'd program starts with."""
    for number in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)  # noqa: S606 — the run's own command, as the C helper execs it
    finally:
        os.write(2, f"bwrap: execvp {argv[0]}: failed\n".encode())
        os._exit(1)


_request = serve()
_request_argv = _request.argv
# ---- from here on: the run's program (pid 2) ------------------------------------------------------------------
try:
    _given, _path = become_program(_request)
except BaseException as _exc:
    os.write(2, f"cellblock-zygote: {_exc!r}\n".encode())
    os._exit(1)
_START_MODULES = frozenset(sys.modules)
_main = type(sys)("__main__")
_main.__dict__.update(
    __loader__=sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", _path),
    __spec__=None,
    __annotations__={},
    __builtins__=sys.modules["builtins"],
    __file__=_path,
    __cached__=None,
)
sys.modules["__main__"] = _main
del _request, _entries, _entry, chunk
try:
    _fd = os.open(_path, os.O_RDONLY)
except OSError as _exc:
    os.write(2, f"{_PREFIX[0]}: can't open file {_path!r}: [Errno {_exc.errno}] {_exc.strerror}\n".encode())
    os._exit(2)
_source = b""
try:
    while _chunk := os.read(_fd, 1 << 20):
        _source += _chunk
except OSError:  # a directory: python3 runs its __main__.py
    _exec_instead(_request_argv)
os.close(_fd)
if _source.startswith(b"PK\x03\x04"):  # a zip archive: python3 runs its __main__.py
    _exec_instead(_request_argv)
try:
    _code = compile(_source, _path, "exec", dont_inherit=True)
except ValueError:  # NUL bytes: compile() refuses, python3's file reader does not
    _exec_instead(_request_argv)
except BaseException as _exc:  # as a bare start prints a syntax error: no traceback header
    _exc.__traceback__ = None
    sys.last_type, sys.last_value, sys.last_traceback = type(_exc), _exc, None
    sys.excepthook(type(_exc), _exc, None)
    del _exc
    _finish(1)
del _source, _chunk
try:
    exec(_code, _main.__dict__)  # noqa: S102 — this *is* `python3 main.py`
except SystemExit as _exc:
    _status = _exit_status(_exc)
    del _exc
    _finish(_status)
except BaseException as _exc:
    _tb = _exc.__traceback__
    _exc.__traceback__ = _tb.tb_next if _tb is not None else None  # without this frame, as in a bare run
    sys.last_type, sys.last_value, sys.last_traceback = type(_exc), _exc, _exc.__traceback__
    with contextlib.suppress(BaseException):  # CPython reports a failing hook and goes on exiting
        sys.excepthook(type(_exc), _exc, _exc.__traceback__)
    _interrupted = isinstance(_exc, KeyboardInterrupt)
    del _exc, _tb
    _finish(1, _interrupted)
_finish(0)
