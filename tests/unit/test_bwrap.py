"""The launch argv builder (`cellblock.sandbox.bwrap`): pure, no root, no processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellblock.sandbox import bwrap
from cellblock.sandbox.bwrap import BwrapLayout, etc_files, launch_argv, rlimit_args
from cellblock.sandbox.spec import RunLimits

LAYOUT = BwrapLayout(
    bwrap="/usr/bin/bwrap", prlimit="/usr/bin/prlimit", setpriv="/usr/bin/setpriv",
    box_dir=Path("/data/slots/slot3/box"), etc_dir=Path("/data/shared/etc"),
    tmp_size_bytes=64 * 1024 * 1024,
)  # fmt: skip
LIMITS = RunLimits(
    cpu_time_s=2.0, wall_time_s=5.0, memory_kib=256 * 1024, processes=64, output_bytes=1024 * 1024,
    file_size_bytes=10 * 1024 * 1024, open_files=64, stack_kib=8192,
)  # fmt: skip
PROGRAM = ["./main", "--", "two words", "$(touch /pwned); `id` | cat > x", "--unshare-net"]
INFO_FD, BLOCK_FD, SECCOMP_FD = 11, 12, 13
SLOT_UID = 60003
SHELL_CHARS = set(" \t\n;&|$`<>()'\"*?")


def build(
    limits: RunLimits = LIMITS,
    program: list[str] | None = None,
    *,
    network: bool = False,
    env: dict[str, str] | None = None,
    ro_binds: list[str] | None = None,
) -> list[str]:
    return launch_argv(
        LAYOUT, limits, list(PROGRAM if program is None else program), uid=SLOT_UID, gid=SLOT_UID,
        info_fd=INFO_FD, block_fd=BLOCK_FD,
        seccomp_fd=SECCOMP_FD, env=env or {}, ro_binds=ro_binds or [], network=network,
    )  # fmt: skip


def split(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(prlimit flags, bwrap argv incl. its binary, program): split at the first three '--'."""
    assert argv[0] == "/usr/bin/prlimit"
    first = argv.index("--")
    second = argv.index("--", first + 1)
    third = argv.index("--", second + 1)
    return argv[1:first], argv[second + 1 : third], argv[third + 1 :]


def test_privileges_are_dropped_by_setpriv_before_bwrap() -> None:
    argv = build()
    first = argv.index("--")
    second = argv.index("--", first + 1)
    drop = argv[first + 1 : second]
    assert drop[0] == "/usr/bin/setpriv"
    for flag in (f"--reuid={SLOT_UID}", f"--regid={SLOT_UID}", "--clear-groups", "--inh-caps=-all",
                 "--bounding-set=-all", "--no-new-privs"):  # fmt: skip
        assert flag in drop


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


def test_structure_prlimit_then_bwrap_then_program_verbatim() -> None:
    argv = build()
    assert all(isinstance(a, str) for a in argv)
    flags, bw, program = split(argv)
    assert bw[0] == "/usr/bin/bwrap"
    # The program comes after bwrap's own `--`, unquoted and unchanged, even with `--` and metacharacters.
    assert program == PROGRAM
    assert flags and all(f.startswith("--") and "=" in f for f in flags)


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
    # Host paths are read-only: /usr and the few /etc files; nothing is bound writable except the box.
    assert has_seq(bw, "--ro-bind-try", "/usr", "/usr")
    assert bw.count("--bind") == 1
    assert "--share-net" not in bw and "--unshare-all" not in bw  # explicit list, so --share-net cannot sneak in
    for target, link in (("usr/bin", "/bin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"), ("usr/sbin", "/sbin")):
        assert has_seq(bw, "--symlink", target, link)
    for name in ("passwd", "group", "hosts", "nsswitch.conf"):
        assert has_seq(bw, "--ro-bind", f"/data/shared/etc/{name}", f"/etc/{name}")


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


def test_no_shell_anywhere() -> None:
    argv = build()
    flags, bw, _ = split(argv)
    for arg in [*flags, *bw]:
        assert not (set(arg) & SHELL_CHARS), arg
    assert not {"sh", "/bin/sh", "bash", "-c"} & {*flags, *bw}


def test_rlimits_from_the_limits() -> None:
    flags = rlimit_args(LIMITS)
    # CPU is a backstop above the watcher's total-CPU limit: soft = ceil(limit) + 1, hard = soft + 1.
    assert "--cpu=3:4" in flags
    assert f"--fsize={10 * 1024 * 1024 + 1}" in flags  # max(output, file size) + 1 byte
    assert "--nofile=64" in flags
    assert f"--stack={8192 * 1024}" in flags
    assert "--core=0" in flags
    # RLIMIT_AS is a backstop above the cgroup limit: 2 × memory + 64 MiB for loader, libraries and arenas.
    assert f"--as={2 * 256 * 1024 * 1024 + (64 << 20)}" in flags
    assert len(flags) == 6


def test_fractional_cpu_rounds_up() -> None:
    limits = RunLimits(cpu_time_s=2.2, wall_time_s=5, memory_kib=1024, processes=1, output_bytes=10,
                       file_size_bytes=5)  # fmt: skip
    flags = rlimit_args(limits)
    assert "--cpu=4:5" in flags
    assert "--fsize=11" in flags  # the output cap is the larger of the two here


def test_address_space_only_when_the_language_tolerates_it() -> None:
    without = RunLimits(**{**LIMITS.__dict__, "address_space": False})
    flags = rlimit_args(without)
    assert not any(f.startswith("--as") for f in flags)
    argv_flags, _, _ = split(build(limits=without))
    assert not any(f.startswith("--as") for f in argv_flags)
    with_as, _, _ = split(build())
    assert f"--as={LIMITS.address_space_bytes}" in with_as


def test_address_space_backstop_follows_the_memory_limit() -> None:
    small = RunLimits(**{**LIMITS.__dict__, "memory_kib": 16 * 1024})
    assert small.address_space_bytes == 2 * 16 * 1024 * 1024 + (64 << 20)
    assert f"--as={small.address_space_bytes}" in rlimit_args(small)
    assert small.address_space_bytes > small.memory_kib * 1024  # never below the cgroup limit it backs up


def test_rlimits_go_to_prlimit_not_to_bwrap() -> None:
    flags, bw, _ = split(build())
    assert flags == rlimit_args(LIMITS)
    assert not any(a.startswith(("--cpu", "--fsize", "--as=", "--nofile", "--core")) for a in bw)


def test_empty_program_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        build(program=[])


def test_etc_files_name_one_unprivileged_user() -> None:
    files = etc_files()
    assert set(files) == {"passwd", "group", "hosts", "nsswitch.conf"}
    passwd = files["passwd"].splitlines()
    assert "runner:x:1000:1000:runner:/box:/bin/sh" in passwd
    assert not any(line.split(":")[2] == "0" for line in passwd)  # no root user inside the box
    assert "127.0.0.1 localhost box" in files["hosts"]
