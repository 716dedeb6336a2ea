"""The launch argv builder (`cellblock.sandbox.bwrap`): pure, no root, no processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellblock.sandbox import bwrap
from cellblock.sandbox.bwrap import ETC_MOUNT, ETC_NAMES, BwrapLayout, launch_argv, launcher_args
from cellblock.sandbox.spec import RunLimits

LAUNCHER = "/data/shared/cellblock-launch-0123456789abcdef"
LAYOUT = BwrapLayout(
    bwrap="/usr/bin/bwrap", launcher=LAUNCHER, box_dir=Path("/data/slots/slot3/box"),
    etc_dir=Path("/data/shared/etc-fedcba9876543210"), tmp_size_bytes=64 * 1024 * 1024,
)  # fmt: skip
LIMITS = RunLimits(
    cpu_time_s=2.0, wall_time_s=5.0, memory_kib=256 * 1024, processes=64, output_bytes=1024 * 1024,
    file_size_bytes=10 * 1024 * 1024, open_files=64, stack_kib=8192,
)  # fmt: skip
PROGRAM = ["./main", "--", "two words", "$(touch /pwned); `id` | cat > x", "--unshare-net"]
INFO_FD, BLOCK_FD, SECCOMP_FD = 11, 12, 13
SLOT_UID, SLOT_GID = 60003, 60103  # different, so that swapped positions are caught
SHELL_CHARS = set(" \t\n;&|$`<>()'\"*?")
# cellblock-launch's positional arguments, in order (launcher/cellblock-launch.c).
POSITIONS = ("uid", "gid", "cpu_soft", "cpu_hard", "fsize", "nofile", "stack", "as")


def build(
    limits: RunLimits = LIMITS,
    program: list[str] | None = None,
    *,
    network: bool = False,
    env: dict[str, str] | None = None,
    ro_binds: list[str] | None = None,
) -> list[str]:
    return launch_argv(
        LAYOUT, limits, list(PROGRAM if program is None else program), uid=SLOT_UID, gid=SLOT_GID,
        info_fd=INFO_FD, block_fd=BLOCK_FD,
        seccomp_fd=SECCOMP_FD, env=env or {}, ro_binds=ro_binds or [], network=network,
    )  # fmt: skip


def split(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(launcher arguments, bwrap argv incl. its binary, program): split at the first two '--'."""
    assert argv[0] == LAUNCHER
    first = argv.index("--")
    second = argv.index("--", first + 1)
    return argv[1:first], argv[first + 1 : second], argv[second + 1 :]


def named(args: list[str]) -> dict[str, int]:
    assert len(args) == len(POSITIONS)
    return {name: int(value) for name, value in zip(POSITIONS, args, strict=True)}


def has_seq(args: list[str], *seq: str) -> bool:
    """True when `seq` appears as consecutive elements of `args` (an option followed by its values)."""
    n = len(seq)
    return any(tuple(args[i : i + n]) == seq for i in range(len(args) - n + 1))


def setenvs(args: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i, arg in enumerate(args):
        if arg == "--setenv":
            out.setdefault(args[i + 1], []).append(args[i + 2])
    return out


def symlinks(args: list[str]) -> dict[str, str]:
    """link path -> target, for every `--symlink TARGET LINK`."""
    return {args[i + 2]: args[i + 1] for i, arg in enumerate(args) if arg == "--symlink"}


def test_structure_launcher_then_bwrap_then_program_verbatim() -> None:
    argv = build()
    assert all(isinstance(a, str) for a in argv)
    args, bw, program = split(argv)
    assert bw[0] == "/usr/bin/bwrap"
    # The launcher's `--` is exactly at position 9 (launcher + 8 numbers): the C code checks argv[9].
    assert argv[9] == "--"
    assert len(args) == 8 and all(a.isdigit() for a in args)
    # The program comes after bwrap's own `--`, unquoted and unchanged, even with `--` and metacharacters.
    assert program == PROGRAM
    assert argv[len(argv) - len(PROGRAM) - 1] == "--"
    assert "--" not in bw


def test_launcher_drops_to_the_slot_uid_and_gid() -> None:
    args, _, _ = split(build())
    values = named(args)
    assert values["uid"] == SLOT_UID
    assert values["gid"] == SLOT_GID
    assert launcher_args(LIMITS, 1, 2)[:2] == ["1", "2"]


def test_every_isolation_flag_is_present() -> None:
    _, bw, _ = split(build())
    for flag in (
        "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup", "--unshare-net",
        "--disable-userns", "--die-with-parent", "--new-session", "--clearenv",
    ):  # fmt: skip
        assert bw.count(flag) == 1, flag
    assert has_seq(bw, "--uid", "1000")
    assert has_seq(bw, "--gid", "1000")
    assert has_seq(bw, "--hostname", "box")
    assert has_seq(bw, "--proc", "/proc")
    assert has_seq(bw, "--dev", "/dev")
    assert has_seq(bw, "--size", str(64 * 1024 * 1024), "--tmpfs", "/tmp")
    assert has_seq(bw, "--bind", "/data/slots/slot3/box", "/box")
    assert has_seq(bw, "--remount-ro", "/")
    assert has_seq(bw, "--chdir", "/box")
    assert has_seq(bw, "--seccomp", str(SECCOMP_FD))
    assert has_seq(bw, "--info-fd", str(INFO_FD))
    assert has_seq(bw, "--block-fd", str(BLOCK_FD))
    # Host paths are read-only: /usr and our prepared /etc; nothing is bound writable except the box.
    assert has_seq(bw, "--ro-bind-try", "/usr", "/usr")
    assert bw.count("--bind") == 1
    assert "--share-net" not in bw and "--unshare-all" not in bw  # explicit list, so --share-net cannot sneak in
    for target, link in (("usr/bin", "/bin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"), ("usr/sbin", "/sbin")):
        assert has_seq(bw, "--symlink", target, link)


def test_etc_is_one_read_only_bind_plus_a_symlink_per_name() -> None:
    _, bw, _ = split(build())
    assert has_seq(bw, "--ro-bind", "/data/shared/etc-fedcba9876543210", ETC_MOUNT)
    assert bw.count("--ro-bind") == 1  # one bind for all of /etc; everything else host-side is --ro-bind-try
    # No host /etc entry is bound (without network): the box sees only our prepared files.
    sources = [bw[i + 1] for i, a in enumerate(bw) if a in ("--bind", "--ro-bind", "--ro-bind-try")]
    assert not any(s.startswith("/etc") for s in sources), sources
    links = symlinks(bw)
    etc_links = {link: target for link, target in links.items() if link.startswith("/etc/")}
    assert etc_links == {f"/etc/{name}": f"{ETC_MOUNT}/{name}" for name in ETC_NAMES}
    for name in ("passwd", "group", "hosts", "nsswitch.conf", "ld.so.cache", "localtime", "alternatives"):
        assert name in ETC_NAMES
    # The mount must exist before a link into it is followed; bwrap applies operations in order.
    assert bw.index(ETC_MOUNT) < min(i for i, a in enumerate(bw) if a.startswith(f"{ETC_MOUNT}/"))
    # Nothing writable there: the bind is read-only and "/" is remounted read-only after the links.
    assert bw.index("--remount-ro") > max(i for i, a in enumerate(bw) if a.startswith("/etc/"))


def test_clearenv_comes_before_every_setenv() -> None:
    _, bw, _ = split(build(env={"FOO": "bar"}))
    first_setenv = bw.index("--setenv")
    assert bw.index("--clearenv") < first_setenv


def test_network_only_when_asked() -> None:
    _, off, _ = split(build(network=False))
    _, on, _ = split(build(network=True))
    assert "--unshare-net" in off
    assert "--unshare-net" not in on
    # The other namespaces stay unshared with network on.
    for flag in ("--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup"):
        assert flag in on
    assert has_seq(on, "--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf")
    assert "/etc/resolv.conf" not in off
    # With network the /etc layout is the same, plus resolv.conf.
    assert symlinks(on) == symlinks(off)
    assert has_seq(on, "--ro-bind", "/data/shared/etc-fedcba9876543210", ETC_MOUNT)


def test_environment_is_the_box_defaults_overridden_by_the_step() -> None:
    _, bw, _ = split(build(env={"PATH": "/opt/x/bin", "FOO": "a b"}))
    env = setenvs(bw)
    assert env["PATH"] == ["/opt/x/bin"]  # overridden once, not set twice
    assert env["FOO"] == ["a b"]  # one argv element, spaces kept, no quoting
    assert env["HOME"] == ["/box"]
    assert env["LANG"] == ["C.UTF-8"]
    assert set(env) == {*bwrap.BOX_ENV, "FOO"}


def test_extra_ro_binds_are_read_only_at_the_same_place() -> None:
    _, bw, _ = split(build(ro_binds=["/etc/java-17-openjdk", "/opt/tool"]))
    assert has_seq(bw, "--ro-bind-try", "/etc/java-17-openjdk", "/etc/java-17-openjdk")
    assert has_seq(bw, "--ro-bind-try", "/opt/tool", "/opt/tool")
    assert not has_seq(bw, "--bind", "/opt/tool", "/opt/tool")
    assert bw.count("--bind") == 1  # still only the box


def test_no_shell_anywhere() -> None:
    argv = build()
    args, bw, _ = split(argv)
    for arg in [LAUNCHER, *args, *bw]:
        assert not (set(arg) & SHELL_CHARS), arg
    assert not {"sh", "/bin/sh", "bash", "-c"} & {*args, *bw}


def test_rlimits_from_the_limits() -> None:
    values = named(launcher_args(LIMITS, SLOT_UID, SLOT_GID))
    # CPU is a backstop above the watcher's total-CPU limit: soft = ceil(limit) + 1, hard = soft + 1.
    assert (values["cpu_soft"], values["cpu_hard"]) == (3, 4)
    assert values["fsize"] == 10 * 1024 * 1024 + 1  # max(output, file size) + 1 byte
    assert values["nofile"] == 64
    assert values["stack"] == 8192 * 1024  # the launcher wants bytes; RunLimits has KiB
    # RLIMIT_AS is a backstop above the cgroup limit: 2 × memory + 64 MiB for loader, libraries and arenas.
    assert values["as"] == 2 * 256 * 1024 * 1024 + (64 << 20)


def test_fractional_cpu_rounds_up() -> None:
    limits = RunLimits(cpu_time_s=2.2, wall_time_s=5, memory_kib=1024, processes=1, output_bytes=10,
                       file_size_bytes=5)  # fmt: skip
    values = named(launcher_args(limits, SLOT_UID, SLOT_GID))
    assert (values["cpu_soft"], values["cpu_hard"]) == (4, 5)
    assert values["fsize"] == 11  # the output cap is the larger of the two here


def test_address_space_only_when_the_language_tolerates_it() -> None:
    without = RunLimits(**{**LIMITS.__dict__, "address_space": False})
    assert named(launcher_args(without, SLOT_UID, SLOT_GID))["as"] == 0  # 0 = the launcher leaves AS alone
    argv_args, _, _ = split(build(limits=without))
    assert named(argv_args)["as"] == 0
    with_as, _, _ = split(build())
    assert named(with_as)["as"] == LIMITS.address_space_bytes


def test_address_space_backstop_follows_the_memory_limit() -> None:
    small = RunLimits(**{**LIMITS.__dict__, "memory_kib": 16 * 1024})
    assert small.address_space_bytes == 2 * 16 * 1024 * 1024 + (64 << 20)
    assert named(launcher_args(small, SLOT_UID, SLOT_GID))["as"] == small.address_space_bytes
    assert small.address_space_bytes > small.memory_kib * 1024  # never below the cgroup limit it backs up


def test_limits_go_to_the_launcher_not_to_bwrap() -> None:
    args, bw, _ = split(build())
    assert args == launcher_args(LIMITS, SLOT_UID, SLOT_GID)
    assert not any(a.startswith(("--cpu", "--fsize", "--as", "--nofile", "--core", "--stack", "--rlimit")) for a in bw)
    assert str(LIMITS.address_space_bytes) not in bw and str(LIMITS.fsize_bytes) not in bw


def test_empty_program_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        build(program=[])
