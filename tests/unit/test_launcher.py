"""The static `cellblock-launch` helper (`cellblock.sandbox.launcher`), built with gcc and run for real.

It is the one place where root becomes the slot's user: each rlimit it is given must be in force in the
program it execs, the program must run with the slot's uid/gid, no supplementary groups, no capabilities
and no_new_privs, and anything odd in its argv must stop it (status 125) before it execs anything.
"""

from __future__ import annotations

import hashlib
import os
import resource
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from cellblock.errors import SandboxUnavailable
from cellblock.sandbox import launcher
from cellblock.sandbox.launcher import build_launcher

pytestmark = pytest.mark.sandbox

# Outside the slot range (first_uid 60000 + at most 1000 slots), so nothing else runs as them; uid != gid so
# that a launcher mixing the two up is caught.
UID, GID = 61234, 61235
CPU_SOFT, CPU_HARD = 7, 9
FSIZE = 123_457
NOFILE = 77
STACK = 3 * 1024 * 1024 + 4096
AS = 1_500_000_000
LIMITS = [str(n) for n in (CPU_SOFT, CPU_HARD, FSIZE, NOFILE, STACK, AS)]
ECHO = ["/bin/echo", "RAN"]
NR_OPEN = int(
    Path("/proc/sys/fs/nr_open").read_text()
)  # no process may have more fds, whatever its caps  # a program that leaves a trace on stdout if it ever runs


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_launcher(tmp_path_factory.mktemp("launcher"))


def launch(binary: Path, *args: str, extra_groups: list[int] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=30, check=False, extra_groups=extra_groups
    )


def run_as_slot(binary: Path, program: list[str], limits: list[str] = LIMITS) -> str:
    done = launch(binary, str(UID), str(GID), *limits, "--", *program)
    assert done.returncode == 0, done.stderr
    return done.stdout


def proc_limits(text: str) -> dict[str, tuple[str, str]]:
    """/proc/<pid>/limits as {name: (soft, hard)}; the name is the text before the values' column."""
    out = {}
    for line in text.splitlines()[1:]:
        name, soft, hard = line[:26].strip(), *line[26:].split()[:2]
        out[name] = (soft, hard)
    return out


def status(text: str) -> dict[str, str]:
    return {key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())}


# ---------------------------------------------------------------------------------------------- build


def test_build_is_static_and_named_by_its_source_hash(built: Path) -> None:
    digest = hashlib.sha256(launcher.source_text()).hexdigest()[:16]
    assert built.name == f"cellblock-launch-{digest}"
    assert os.access(built, os.X_OK)
    # No PT_INTERP program header: the binary needs no dynamic loader (that is the point of the launcher).
    data = built.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2  # 64-bit
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    assert 1 in types  # PT_LOAD: the headers were parsed right
    assert 3 not in types  # PT_INTERP


def test_building_twice_returns_the_same_file_without_rebuilding(built: Path) -> None:
    before = built.stat()
    again = build_launcher(built.parent)
    assert again == built
    after = again.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temp dirs left behind


def test_concurrent_builds_agree(tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(build_launcher(tmp_path))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 3 and len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]
    assert run_as_slot(results[0], ECHO) == "RAN\n"


def test_a_source_that_does_not_compile_is_refused_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launcher, "source_text", lambda: b"int main(void) { return undeclared; }\n")
    with pytest.raises(SandboxUnavailable, match="cannot build the sandbox launcher"):
        build_launcher(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- limits


def test_every_rlimit_is_applied(built: Path) -> None:
    limits = proc_limits(run_as_slot(built, ["/bin/cat", "/proc/self/limits"]))
    assert limits["Max cpu time"] == (str(CPU_SOFT), str(CPU_HARD))
    assert limits["Max file size"] == (str(FSIZE), str(FSIZE))
    assert limits["Max open files"] == (str(NOFILE), str(NOFILE))
    assert limits["Max stack size"] == (str(STACK), str(STACK))
    assert limits["Max core file size"] == ("0", "0")
    assert limits["Max address space"] == (str(AS), str(AS))


def test_the_limits_are_seen_by_a_shell_too(built: Path) -> None:
    # ulimit prints blocks of 1024 bytes for -f (dash), KiB for -s and -v, seconds for -t.
    out = run_as_slot(built, ["/bin/sh", "-c", "ulimit -t; ulimit -Ht; ulimit -n; ulimit -s; ulimit -v; ulimit -c"])
    assert out.split() == [str(CPU_SOFT), str(CPU_HARD), str(NOFILE), str(STACK // 1024), str(AS // 1024), "0"]


def test_address_space_zero_leaves_the_inherited_limit_alone(built: Path) -> None:
    # prlimit gives the launcher a finite RLIMIT_AS first: "0 = unset" must keep it, not set 0 or infinity.
    inherited = 3_000_000_000
    no_as = [*LIMITS[:-1], "0"]
    done = subprocess.run(
        ["prlimit", f"--as={inherited}:{inherited}", "--", str(built), str(UID), str(GID), *no_as, "--",
         "/bin/cat", "/proc/self/limits"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    limits = proc_limits(done.stdout)
    assert limits["Max address space"] == (str(inherited), str(inherited))
    assert limits["Max open files"] == (str(NOFILE), str(NOFILE))  # the other limits are still applied
    # And without the wrapper, the launcher's own (unlimited) AS passes through unchanged.
    assert resource.getrlimit(resource.RLIMIT_AS)[1] == resource.RLIM_INFINITY
    plain = proc_limits(run_as_slot(built, ["/bin/cat", "/proc/self/limits"], no_as))
    assert plain["Max address space"] == ("unlimited", "unlimited")


def test_a_limit_it_cannot_set_stops_it(built: Path) -> None:
    # Soft above hard is EINVAL: the launcher must fail closed, not run the program with no CPU limit.
    done = launch(built, str(UID), str(GID), "9", "7", *LIMITS[2:], "--", *ECHO)
    assert done.returncode == 125
    assert "RLIMIT_CPU" in done.stderr
    assert done.stdout == ""


# ---------------------------------------------------------------------------------------------- privileges


def test_runs_as_the_slot_with_no_groups_no_capabilities_and_no_new_privs(built: Path) -> None:
    # The launcher is started with supplementary groups, so "no groups" is something it did, not a given.
    done = launch(built, str(UID), str(GID), *LIMITS, "--", "/bin/cat", "/proc/self/status", extra_groups=[4, 27])
    assert done.returncode == 0, done.stderr
    fields = status(done.stdout)
    assert fields["Uid"].split() == [str(UID)] * 4  # real, effective, saved, filesystem
    assert fields["Gid"].split() == [str(GID)] * 4
    assert fields["Groups"] == ""
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, cap
    assert fields["NoNewPrivs"] == "1"


def test_the_test_process_itself_had_something_to_drop() -> None:
    # Guards the test above: had we started without capabilities, "all zero" would prove nothing.
    fields = status(Path("/proc/self/status").read_text())
    assert os.geteuid() == 0
    assert int(fields["CapBnd"], 16) != 0 and int(fields["CapEff"], 16) != 0
    assert fields["NoNewPrivs"] == "0"


def test_program_is_executed_by_path_verbatim(built: Path) -> None:
    out = run_as_slot(built, ["/bin/echo", "--", "a b", "$(id)", "*"])
    assert out == "-- a b $(id) *\n"
    done = launch(built, str(UID), str(GID), *LIMITS, "--", "echo", "RAN")  # no PATH search
    assert done.returncode == 127
    assert done.stdout == ""


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([str(UID), str(GID), *LIMITS, "--", *ECHO], None, id="ok"),
        pytest.param(["x61234", str(GID), *LIMITS, "--", *ECHO], "bad uid", id="letters"),
        pytest.param([str(UID), "612 35", *LIMITS, "--", *ECHO], "bad gid", id="space"),
        pytest.param([str(UID), str(GID), "", *LIMITS[1:], "--", *ECHO], "bad cpu soft", id="empty"),
        pytest.param([str(UID), str(GID), "7", "9s", *LIMITS[2:], "--", *ECHO], "bad cpu hard", id="suffix"),
        pytest.param([str(UID), str(GID), *LIMITS[:2], "-1", *LIMITS[3:], "--", *ECHO], "bad fsize", id="neg"),
        pytest.param([str(UID), str(GID), *LIMITS[:3], "-0", *LIMITS[4:], "--", *ECHO], "bad nofile", id="neg0"),
        pytest.param([str(UID), str(GID), *LIMITS[:4], "0x10", LIMITS[5], "--", *ECHO], "bad stack", id="hex"),
        pytest.param([str(UID), str(GID), *LIMITS[:5], "1" * 25, "--", *ECHO], "bad as", id="overflow"),
        pytest.param([str(UID), str(GID), *LIMITS, *ECHO], "usage", id="no-separator"),
        pytest.param([str(UID), str(GID), *LIMITS[:-1], "--", *ECHO], "usage", id="one-number-short"),
        pytest.param([str(UID), str(GID), *LIMITS, "--"], "usage", id="no-program"),
        pytest.param([], "usage", id="nothing"),
        pytest.param(["0", str(GID), *LIMITS, "--", *ECHO], "refusing to run as root", id="uid0"),
        pytest.param([str(UID), "0", *LIMITS, "--", *ECHO], "refusing to run as root", id="gid0"),
        # (uid_t)-1 means "unchanged" to setresuid: refused as a bad uid, or caught by the check after the drop.
        pytest.param(["4294967295", str(GID), *LIMITS, "--", *ECHO], "uid", id="uid-minus-1"),
        pytest.param(
            [str(UID), str(GID), *LIMITS[:3], str(NR_OPEN + 1), *LIMITS[4:], "--", *ECHO],
            "RLIMIT_NOFILE",
            id="above-nr-open",
        ),
        # uid_t/gid_t are 32 bits: 2**32 + 1 must not quietly become uid 1 (daemon) or gid 1.
        pytest.param(
            [str(2**32 + 1), str(GID), *LIMITS, "--", *ECHO],
            "bad uid",
            id="uid-wraps",
        ),
        pytest.param(
            [str(UID), str(2**32 + 1), *LIMITS, "--", *ECHO],
            "bad gid",
            id="gid-wraps",
        ),
        # strtoull skips leading blanks and takes a sign, and negates "-1" to ULLONG_MAX = RLIM_INFINITY.
        pytest.param(
            [str(UID), str(GID), *LIMITS[:2], " -1", *LIMITS[3:], "--", *ECHO],
            "bad fsize",
            id="blank-then-neg",
        ),
        pytest.param(
            [str(UID), str(GID), *LIMITS[:3], "+77", *LIMITS[4:], "--", *ECHO],
            "bad nofile",
            id="plus",
        ),
    ],
)
def test_bad_arguments_exit_125_before_running_anything(built: Path, args: list[str], message: str | None) -> None:
    done = launch(built, *args)
    if message is None:  # the control: the same argv shape with good values runs the program
        assert (done.returncode, done.stdout) == (0, "RAN\n")
        return
    assert done.returncode == 125, done.stderr
    assert message in done.stderr
    assert done.stderr.startswith(("cellblock-launch", "usage: cellblock-launch"))
    assert done.stdout == ""


def test_a_missing_program_exits_127_with_a_message(built: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-program"
    done = launch(built, str(UID), str(GID), *LIMITS, "--", str(missing))
    assert done.returncode == 127
    assert f"exec {missing}" in done.stderr
