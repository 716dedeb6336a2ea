"""The seccomp deny-list, compiled once per process to BPF with pyseccomp (libseccomp).

Default action ALLOW; the calls below fail with EPERM. A syscall from another ABI (i386, x32) does not
match the native filter and is killed (libseccomp's bad-arch action), so the deny-list cannot be walked
around with ``int 0x80``. ``clone3`` fails with ENOSYS so that libc falls back to ``clone``, whose flags we
*can* inspect: new namespaces are refused there (bwrap's --disable-userns covers user namespaces too).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount",
    "fspick", "mount_setattr",
    "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_by_handle_at", "name_to_handle_at",
    "swapon", "swapoff", "reboot", "syslog", "acct", "quotactl", "lookup_dcookie", "vhangup",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "fanotify_init", "personality", "uselib", "nfsservctl",
)  # fmt: skip
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


def build_bpf() -> bytes:
    """Compile the filter. Imported lazily: libseccomp is a host prerequisite that doctor checks."""
    import pyseccomp as sc

    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    for name in DENIED:
        try:
            filt.add_rule(sc.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError, OSError):
            continue  # a name this libseccomp does not know does not exist on this kernel either
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in NAMESPACE_FLAGS:
        filt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    with tempfile.TemporaryFile() as handle:
        filt.export_bpf(handle)
        handle.seek(0)
        return handle.read()


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write to a unique temp file beside `path`, then rename: readers never see a half-written file,
    and several workers starting at once on one data dir do not trip over each other."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class SeccompProgram:
    """The compiled filter on disk; `open_fd()` gives bwrap a fresh fd positioned at the start."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def install(cls, directory: Path) -> SeccompProgram:
        path = directory / "seccomp.bpf"
        write_atomically(path, build_bpf(), 0o644)
        return cls(path)

    def open_fd(self) -> int:
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
