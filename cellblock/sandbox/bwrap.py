"""Build the launch argv: ``cellblock-launch … -- bwrap … -- program``. Pure, unit-tested without root.

Why a launcher: this host's root lacks CAP_SYS_RESOURCE, so limits cannot be set on another process from
outside, and `preexec_fn` is unsafe in threaded workers. Popen(user=…) is out too: with user/group CPython
cannot use vfork and falls back to fork(), copying the whole worker (measured: 17 ms from a 200 MiB worker).
So the worker vforks our small static `cellblock-launch` (launcher/cellblock-launch.c), which sets the
rlimits on itself, drops the capability bounding set, the groups, gid and uid, sets no_new_privs, and execs
bwrap. It replaced `prlimit … -- setpriv …`: the same steps in two dynamic execs cost 2.3 ms, this 0.7 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cellblock.sandbox.spec import RunLimits

# Inside the box the program is always uid/gid 1000 ("runner"); outside it is the slot's own uid.
BOX_UID = 1000
BOX_GID = 1000
BOX_PATH = "/box"
BOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/box",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TMPDIR": "/tmp",
    "USER": "runner",
    "LOGNAME": "runner",
}
# Host paths every program sees, read-only. /etc is ours (see etcdir.py): one bind at ETC_MOUNT, and
# symlinks from /etc/<name> into it — symlinks cost nothing, each bind mount ~0.15 ms per run.
BASE_RO_BINDS = ("/usr",)
ETC_MOUNT = "/etc/.cellblock"  # inside /etc, so no other top-level directory appears in the box
ETC_NAMES = ("passwd", "group", "hosts", "nsswitch.conf", "ld.so.cache", "localtime", "alternatives")
MERGED_USR_SYMLINKS = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"))


@dataclass(frozen=True)
class BwrapLayout:
    """Where the slot's files are on the host."""

    bwrap: str
    launcher: str  # the built cellblock-launch binary
    box_dir: Path  # bound read-write at /box
    etc_dir: Path  # our prepared /etc entries (etcdir.py), bound at ETC_MOUNT
    tmp_size_bytes: int


def launcher_args(limits: RunLimits, uid: int, gid: int) -> list[str]:
    """cellblock-launch's positional arguments: UID GID CPU_SOFT CPU_HARD FSIZE NOFILE STACK AS.

    RLIMIT_CPU (seconds) is a per-process backstop: the watcher enforces the total first. AS 0 = unset.
    """
    cpu_soft = math.ceil(limits.cpu_time_s) + 1
    return [
        str(uid), str(gid), str(cpu_soft), str(cpu_soft + 1), str(limits.fsize_bytes), str(limits.open_files),
        str(limits.stack_kib * 1024), str(limits.address_space_bytes if limits.address_space else 0),
    ]  # fmt: skip


def bwrap_args(
    layout: BwrapLayout,
    *,
    info_fd: int,
    block_fd: int,
    seccomp_fd: int,
    env: dict[str, str],
    ro_binds: list[str],
    network: bool,
) -> list[str]:
    args = [
        layout.bwrap,
        "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup",
        "--disable-userns", "--die-with-parent", "--new-session",
        "--uid", str(BOX_UID), "--gid", str(BOX_GID), "--hostname", "box",
    ]  # fmt: skip
    if not network:
        args.append("--unshare-net")
    args += _filesystem_args(layout, ro_binds)
    if network:
        args += ["--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"]
    args += [
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(layout.tmp_size_bytes), "--tmpfs", "/tmp",
        "--bind", str(layout.box_dir), BOX_PATH, "--remount-ro", "/", "--chdir", BOX_PATH,
        "--clearenv",
    ]  # fmt: skip
    for key, value in {**BOX_ENV, **env}.items():
        args += ["--setenv", key, value]
    args += ["--seccomp", str(seccomp_fd), "--info-fd", str(info_fd), "--block-fd", str(block_fd)]
    return args


def launch_argv(
    layout: BwrapLayout,
    limits: RunLimits,
    program: list[str],
    *,
    uid: int,
    gid: int,
    info_fd: int,
    block_fd: int,
    seccomp_fd: int,
    env: dict[str, str],
    ro_binds: list[str],
    network: bool,
) -> list[str]:
    """The full argv. `program` is the command as seen inside the box; uid/gid are the slot's, outside."""
    if not program:
        raise ValueError("empty program argv")
    bwrap = bwrap_args(
        layout,
        info_fd=info_fd,
        block_fd=block_fd,
        seccomp_fd=seccomp_fd,
        env=env,
        ro_binds=ro_binds,
        network=network,
    )
    return [layout.launcher, *launcher_args(limits, uid, gid), "--", *bwrap, "--", *program]


# A warm slot's helper needs these inside the sandbox's user namespace only: CAP_SYS_ADMIN to clone each run
# into fresh pid/mount/IPC namespaces and mount its /tmp, /dev/shm and /proc; CAP_SETPCAP to empty the run's
# capability bounding set. The run's init drops every capability before the program exists.
SLOT_CAPS = ("CAP_SYS_ADMIN", "CAP_SETPCAP")


def _filesystem_args(layout: BwrapLayout, ro_binds: list[str]) -> list[str]:
    """The read-only host view every sandbox gets, fresh or warm: /usr and friends, the merged-/usr symlinks,
    our generated /etc."""
    args: list[str] = []
    for path in (*BASE_RO_BINDS, *ro_binds):
        args += ["--ro-bind-try", path, path]
    for target, link in MERGED_USR_SYMLINKS:
        args += ["--symlink", target, link]
    args += ["--ro-bind", str(layout.etc_dir), ETC_MOUNT]
    for name in ETC_NAMES:
        args += ["--symlink", f"{ETC_MOUNT}/{name}", f"/etc/{name}"]
    return args


def slot_bwrap_args(
    layout: BwrapLayout,
    *,
    helper_fd: int,
    helper_args: list[str],
    ro_binds: list[str],
    shared_seccomp_fd: int | None = None,
    interpreter: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> list[str]:
    """bwrap argv for a warm slot: the fresh layout (never with network), plus what a long-lived sandbox needs.

    Differences from `bwrap_args`, each for a reason: `/` *and* `/dev` are remounted read-only (both are tmpfs the
    sandbox user could write, and a file written there would outlive a run); /dev/shm is its own tmpfs (each
    run mounts a fresh one over it); no --seccomp here (the helper must clone and mount; it loads the same
    filter into each run itself); the helper is executed through /proc/self/fd/N, so no file of ours appears in
    the sandbox; the environment is empty (each run brings its own).

    Shared mode (isolation "warm-shared", `shared_seccomp_fd` given): runs are plain forks of the helper in these
    namespaces, so the helper gets *no* capabilities and bwrap loads the seccomp filter for the whole slot, as for
    a fresh run; /dev/mqueue is mounted so that the helper can empty it after each run.

    Pre-warmed interpreter (warm.Prewarm): the helper is a script run by `interpreter` (e.g. python3 -B) with
    `env`, the environment of the runs it serves (see slothelper/zygote.py).
    """
    args = [
        layout.bwrap,
        "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup", "--unshare-net",
        "--disable-userns", "--die-with-parent", "--new-session",
        "--uid", str(BOX_UID), "--gid", str(BOX_GID), "--hostname", "box",
    ]  # fmt: skip
    args += _filesystem_args(layout, ro_binds)
    args += [
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(layout.tmp_size_bytes), "--tmpfs", "/dev/shm",
        "--size", str(layout.tmp_size_bytes), "--tmpfs", "/tmp",
        "--bind", str(layout.box_dir), BOX_PATH, "--remount-ro", "/", "--remount-ro", "/dev", "--chdir", BOX_PATH,
        "--clearenv",
    ]  # fmt: skip
    if shared_seccomp_fd is not None:
        args[args.index("--remount-ro") : args.index("--remount-ro")] = ["--mqueue", "/dev/mqueue"]
        return [*args, "--seccomp", str(shared_seccomp_fd), "--", f"/proc/self/fd/{helper_fd}", *helper_args]
    for key, value in (env or {}).items():
        args += ["--setenv", key, value]
    for cap in SLOT_CAPS:
        args += ["--cap-add", cap]
    return [*args, "--", *(interpreter or []), f"/proc/self/fd/{helper_fd}", *helper_args]
