"""The warm slot helper (`cellblock-slot.c`) and its wire format (`slotproto.py`), without bubblewrap.

Three layers: the encoder refuses what the helper would; the helper's parser and /box wipe are compiled into
a small harness (the helper's source with -DCB_NO_MAIN) and fed odd input; and the real helper, run as root
on a socketpair, does one run end to end (R → P with the kernel's credentials → G → X) and dies on anything
out of order — which is how the host learns a slot is broken.
"""

from __future__ import annotations

import array
import itertools
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellblock.sandbox import slotproto
from cellblock.sandbox.bwrap import BwrapLayout, bwrap_args, slot_bwrap_args
from cellblock.sandbox.seccomp import SeccompProgram
from cellblock.sandbox.slothelper import build_slot_helper, source_text

pytestmark = pytest.mark.sandbox

LIMITS = slotproto.RunLimitsWire(cpu_soft_s=5, cpu_hard_s=6, fsize_bytes=1 << 20, nofile=64, stack_bytes=8 << 20,
                                 as_bytes=0)  # fmt: skip
HARNESS = r"""
#define CB_NO_MAIN
#include "cellblock-slot.c"
int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "wipe") == 0) { int err = wipe_tree(argv[2]); printf("%d\n", err); return 0; }
    /* parse: one message on stdin; prints "ok argc envc cwd" or "bad" */
    static char buf[CB_MAX_MESSAGE + 1];
    size_t size = fread(buf, 1, sizeof buf, stdin);
    struct request req;
    if (parse_request(buf, size, &req) != 0) { printf("bad\n"); return 0; }
    int n = 0, m = 0;
    while (req.argv[n]) n++;
    while (req.envp[m]) m++;
    printf("ok %d %d %s %s\n", n, m, req.cwd, req.argv[0]);
    free(req.argv);
    free(req.envp);
    return 0;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("harness")
    (work / "cellblock-slot.c").write_bytes(source_text())
    (work / "harness.c").write_text(HARNESS)
    out = work / "harness"
    flags = ["-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function", "-Wno-unused-variable"]
    subprocess.run(["gcc", *flags, "-fsanitize=address,undefined", "-o", str(out), str(work / "harness.c")],
                   check=True, capture_output=True)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_slot_helper(tmp_path_factory.mktemp("helper"))


def parse(harness: Path, message: bytes) -> str:
    done = subprocess.run([str(harness)], input=message, capture_output=True, check=False, timeout=10)
    assert done.returncode == 0, done.stderr.decode()  # the sanitizers found nothing
    return done.stdout.decode().strip()


# ---- the encoder -----------------------------------------------------------------------------------------------


def test_encoder_round_trips_through_the_c_parser(harness: Path) -> None:
    message = slotproto.encode_run(["prog", "a b", ""], {"K": "v=1", "E": ""}, "/box", 0o022, LIMITS)
    assert parse(harness, message) == "ok 3 2 /box prog"


@pytest.mark.parametrize(
    ("argv", "env", "cwd"),
    [([], {}, "/box"), ([""], {}, "/box"), (["a\0b"], {}, "/box"), (["a"], {"K=": "v"}, "/box"),
     (["a"], {"": "v"}, "/box"), (["a"], {"K": "v\0"}, "/box"), (["a"], {}, "box"),
     (["a" * (slotproto.MAX_MESSAGE + 1)], {}, "/box")],
)  # fmt: skip
def test_encoder_refuses_what_the_helper_would(argv: list[str], env: dict[str, str], cwd: str) -> None:
    with pytest.raises(ValueError):
        slotproto.encode_run(argv, env, cwd, 0o022, LIMITS)


# ---- the parser ------------------------------------------------------------------------------------------------


def test_parser_refuses_malformed_requests(harness: Path) -> None:
    good = slotproto.encode_run(["prog"], {"K": "v"}, "/box", 0o022, LIMITS)
    header = bytearray(good[:64])
    cases = [
        good[:63],  # short header
        good[:-1],  # last string not terminated
        good + b"x\0",  # a string too many
        b"X" + good[1:],  # wrong type
        good[:4] + struct.pack("<I", 0o1000) + good[8:],  # umask out of range
        good[:8] + struct.pack("<I", 0) + good[12:],  # argc 0
        good[:8] + struct.pack("<I", 2**32 - 1) + good[12:],  # absurd argc
        bytes(header) + b"box\0prog\0K=v\0",  # relative cwd
        bytes(header) + b"/box\0prog\0Kv\0",  # env entry without '='
        bytes(header) + b"/box\0\0K=v\0",  # empty program name
    ]
    for case in cases:
        assert parse(harness, case) == "bad", case


def test_parser_survives_random_input(harness: Path) -> None:
    rng = random.Random(8)
    good = slotproto.encode_run(["prog", "x"], {"A": "b"}, "/box", 0o022, LIMITS)
    for _ in range(150):
        case = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            case[rng.randrange(len(case))] = rng.randrange(256)
        out = parse(harness, bytes(case[: rng.randint(0, len(case))]))
        assert out == "bad" or out.startswith("ok ")


# ---- the wipe --------------------------------------------------------------------------------------------------


def test_wipe_empties_any_tree_and_never_follows_links(harness: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    box = tmp_path / "box"
    box.mkdir()
    (box / "f").write_text("x")
    (box / "link").symlink_to(outside)
    (box / "link_file").symlink_to(outside / "keep")
    os.mkfifo(box / "fifo")
    locked = box / "locked" / "inner"
    locked.mkdir(parents=True)
    (locked / "secret").write_text("s")
    (locked / "up").symlink_to(outside)
    os.chmod(locked, 0)
    os.chmod(box / "locked", 0)
    fd = os.open(box, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # deeper than any recursion would like, and than the fd limit of a naive walk
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    done = subprocess.run([str(harness), "wipe", str(box)], capture_output=True, text=True, check=False, timeout=60)
    assert done.stdout.strip() == "0", done.stderr
    assert list(box.iterdir()) == []
    assert (outside / "keep").read_text() == "precious"


def test_wipe_as_the_box_owner_handles_mode_000_dirs(harness: Path) -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    base.chmod(0o711)  # the owner below must reach the box
    harness_copy = base / "harness"
    shutil.copy(harness, harness_copy)
    box = base / "box"
    box.mkdir()
    (box / "a" / "b").mkdir(parents=True)
    (box / "a" / "b" / "f").write_text("x")
    os.chmod(box / "a" / "b", 0)
    os.chmod(box / "a", 0)
    for path in (box, box / "a", box / "a" / "b", box / "a" / "b" / "f"):
        os.lchown(path, 61234, 61234)
    try:
        done = subprocess.run(["setpriv", "--reuid=61234", "--regid=61234", "--clear-groups", "--inh-caps=-all",
                               "--bounding-set=-all", str(harness_copy), "wipe", str(box)],
                              capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
        assert done.stdout.strip() == "0", done.stderr
        assert list(box.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---- the real helper, end to end -------------------------------------------------------------------------------


class Helper:
    def __init__(self, binary: Path, bpf: Path, log: Path) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        bpf_fd = os.open(bpf, os.O_RDONLY)
        with open(log, "wb") as err:
            self.proc = subprocess.Popen([str(binary), str(theirs.fileno()), str(bpf_fd), str(1 << 20)],
                                         pass_fds=(theirs.fileno(), bpf_fd), stderr=err)  # fmt: skip
        os.close(bpf_fd)
        theirs.close()
        self.sock.settimeout(10)

    def recv(self) -> tuple[bytes, int | None]:
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        return data, pid

    def send_run(self, message: bytes, fds: list[int]) -> None:
        self.sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])

    def close(self) -> int:
        self.sock.close()
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def live_helper(helper: Path, tmp_path: Path) -> Iterator[Helper]:
    if os.geteuid() != 0:
        pytest.skip("the helper needs CAP_SYS_ADMIN (root here, the sandbox's user namespace in a slot)")
    bpf = SeccompProgram.install(tmp_path).path
    running = Helper(helper, bpf, tmp_path / "log")
    yield running
    running.close()


def io_files(tmp_path: Path, stdin: bytes) -> tuple[list[int], Path]:
    (tmp_path / "in").write_bytes(stdin)
    out = tmp_path / "out"
    fds = [os.open(tmp_path / "in", os.O_RDONLY), os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)]
    fds.append(fds[1])
    return fds, out


def test_one_run_end_to_end(live_helper: Helper, tmp_path: Path) -> None:
    assert live_helper.recv()[0] == b"H"
    fds, out = io_files(tmp_path, b"abc")
    script = "cat; echo; echo $$ $PPID; umask; pwd; echo $K; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"
    live_helper.send_run(slotproto.encode_run(["sh", "-c", script], {"K": "v", "PATH": "/usr/bin:/bin"}, "/tmp",
                                              0o027, LIMITS), fds)  # fmt: skip
    for fd in fds[:2]:
        os.close(fd)
    message, pid = live_helper.recv()
    assert message == b"P"
    assert pid is not None and pid > 1 and Path(f"/proc/{pid}").exists()  # the init's pid on the host
    live_helper.sock.send(b"G")
    kind, value, _ = slotproto.decode_exit(live_helper.recv()[0])
    assert (kind, value) == (slotproto.X_EXITED, 0)
    lines = out.read_text().splitlines()
    assert lines[:5] == ["abc", "2 1", "0027", "/tmp", "v"]  # the program is pid 2 of a fresh pid namespace
    assert "CapEff:\t0000000000000000" in lines and "NoNewPrivs:\t1" in lines and "Seccomp:\t2" in lines
    assert not Path(f"/proc/{pid}").exists()


def test_signal_death_is_reported_as_bwrap_does(live_helper: Helper, tmp_path: Path) -> None:
    assert live_helper.recv()[0] == b"H"
    fds, _ = io_files(tmp_path, b"")
    live_helper.send_run(slotproto.encode_run(["sh", "-c", "kill -SEGV $$"], {"PATH": "/usr/bin:/bin"}, "/", 0o022,
                                              LIMITS), fds)  # fmt: skip
    assert live_helper.recv()[0] == b"P"
    live_helper.sock.send(b"G")
    assert slotproto.decode_exit(live_helper.recv()[0])[1] == 128 + 11


@pytest.mark.parametrize(
    "bad",
    [b"G", b"Z", b"R", b"W\0", slotproto.encode_run(["true"], {}, "/", 0o022, LIMITS)],  # the last: R without fds
)
def test_anything_out_of_order_kills_the_helper(live_helper: Helper, bad: bytes) -> None:
    assert live_helper.recv()[0] == b"H"
    live_helper.sock.send(bad)
    assert live_helper.recv()[0] == b""  # EOF: the host destroys the slot
    assert live_helper.close() == 2


def test_a_second_message_instead_of_go_kills_the_run_and_the_helper(live_helper: Helper, tmp_path: Path) -> None:
    assert live_helper.recv()[0] == b"H"
    fds, out = io_files(tmp_path, b"")
    live_helper.send_run(slotproto.encode_run(["sh", "-c", "echo RAN"], {"PATH": "/usr/bin:/bin"}, "/", 0o022,
                                              LIMITS), fds)  # fmt: skip
    assert live_helper.recv()[0] == b"P"
    live_helper.sock.send(b"W")
    assert live_helper.recv()[0] == b""
    assert live_helper.close() == 2
    assert out.read_bytes() == b""  # the program never ran


# ---- the slot's bwrap argv (pure) ------------------------------------------------------------------------------


def test_slot_bwrap_args_differ_from_a_fresh_sandbox_only_where_a_long_lived_one_must() -> None:
    layout = BwrapLayout(bwrap="/usr/bin/bwrap", launcher="/l", box_dir=Path("/data/slots/slot3/box"),
                         etc_dir=Path("/data/shared/etc"), tmp_size_bytes=64 << 20)  # fmt: skip
    args = slot_bwrap_args(layout, helper_fd=7, helper_args=["3", "4", "5"], ro_binds=["/etc/java"])
    fresh = bwrap_args(layout, info_fd=1, block_fd=2, seccomp_fd=3, env={}, ro_binds=["/etc/java"], network=False)
    pairs = list(itertools.pairwise(args))
    assert ("--remount-ro", "/") in pairs and ("--remount-ro", "/dev") in pairs  # nothing a run writes there stays
    assert ("--tmpfs", "/dev/shm") in pairs and ("--tmpfs", "/tmp") in pairs
    assert [b for a, b in pairs if a == "--cap-add"] == ["CAP_SYS_ADMIN", "CAP_SETPCAP"]  # and nothing else
    assert "--seccomp" not in args and "--setenv" not in args and "--info-fd" not in args
    assert args[-5:] == ["--", "/proc/self/fd/7", "3", "4", "5"]
    for flag in ("--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup",
                 "--unshare-net", "--disable-userns", "--die-with-parent", "--new-session", "--clearenv"):  # fmt: skip
        assert flag in args and flag in fresh
    assert ("--ro-bind-try", "/etc/java") in pairs and ("--bind", str(layout.box_dir)) in pairs


def test_shared_slot_bwrap_args_have_no_caps_and_the_slots_own_seccomp() -> None:
    layout = BwrapLayout(bwrap="/usr/bin/bwrap", launcher="/l", box_dir=Path("/data/slots/slot3/box"),
                         etc_dir=Path("/data/shared/etc"), tmp_size_bytes=64 << 20)  # fmt: skip
    args = slot_bwrap_args(layout, helper_fd=7, helper_args=["3", "-", "5", "shared"], ro_binds=[],
                           shared_seccomp_fd=4)  # fmt: skip
    pairs = list(itertools.pairwise(args))
    assert "--cap-add" not in args  # runs are forks of the helper: it must hold nothing they could inherit
    assert ("--seccomp", "4") in pairs  # loaded once for the whole slot, helper included
    assert ("--mqueue", "/dev/mqueue") in pairs  # so that the helper can empty it after each run
    assert args.index("--mqueue") < args.index("--remount-ro")
    assert ("--remount-ro", "/") in pairs and ("--remount-ro", "/dev") in pairs
    assert args[-6:] == ["--", "/proc/self/fd/7", "3", "-", "5", "shared"]


@pytest.mark.parametrize("bpf", ["-", "3"])
def test_shared_mode_refuses_to_run_outside_a_sandbox(helper: Path, bpf: str) -> None:
    """kill(-1, SIGKILL) after each run is only safe as a non-root pid 2 of a sandbox under seccomp: anywhere
    else the helper must refuse before it does anything (here: root, parent not pid 1, no seccomp)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        done = subprocess.run([str(helper), str(theirs.fileno()), bpf, str(1 << 20), "shared"],
                              pass_fds=(theirs.fileno(),), capture_output=True, timeout=10, check=False)  # fmt: skip
    assert done.returncode == 2, done
    assert b"shared mode runs only as a sandbox" in done.stderr
