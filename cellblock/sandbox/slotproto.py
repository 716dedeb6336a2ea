"""The wire format between the host and a warm slot's helper (cellblock-slot.c, section "WIRE FORMAT").

One SOCK_SEQPACKET message per request or reply, integers little-endian. Keep this module and the C header
section in step; tests/unit/test_slot_helper.py drives the real helper with these encoders.

host → helper: 'R' run (header + strings, SCM_RIGHTS stdin/stdout/stderr), 'G' go, 'W' wipe /box, 'Q' quit.
helper → host: 'H' hello, 'P' (sent by the run's init; its host pid comes from SCM_CREDENTIALS),
'X' exit report, 'w' wipe report, and in shared mode 'c' (clean-up report) after every 'X'.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

REQUEST_HEADER = struct.Struct("<c3xIII6Q")  # 'R', umask, argc, envc, limits[6]: 64 bytes
EXIT = struct.Struct("<cB2xii")  # 'X', kind, value, err: 12 bytes
WIPED = struct.Struct("<cB2xi")  # 'w', ok, errno: 8 bytes
MAX_MESSAGE = 128 * 1024  # the helper's receive buffer; a bigger request runs fresh instead
MAX_STRINGS = 8192
X_EXITED = 0  # value = exit code, 128+N for a signal death
X_EARLY = 1  # the run's init died before 'G' (value = its wait status)
CLEANED = struct.Struct("<c3xi")  # shared mode, after every 'X': 'c', T_* bits (0 = clean): 8 bytes
T_NET = 32  # in 'X' err, both modes: TCP sockets outlived the run in the slot's network namespace: rebuild
T_FLAGS = {
    1: "survivors", 2: "wipe failed", 4: "SysV object left", 8: "helper changed", 16: "/tmp etc. changed",
    T_NET: "TCP sockets left",
}  # fmt: skip
HELLO, PID, GO, WIPE, QUIT = b"H", b"P", b"G", b"W", b"Q"
assert REQUEST_HEADER.size == 64


@dataclass(frozen=True)
class RunLimitsWire:
    """Per-run rlimits, as the kernel wants them. as_bytes 0 leaves RLIMIT_AS unset."""

    cpu_soft_s: int
    cpu_hard_s: int
    fsize_bytes: int
    nofile: int
    stack_bytes: int
    as_bytes: int


def encode_run(argv: list[str], env: dict[str, str], cwd: str, umask: int, limits: RunLimitsWire) -> bytes:
    """An 'R' message. Raises ValueError for what the helper would refuse (NUL bytes, '=' in a key, too big)."""
    if not argv or not argv[0]:
        raise ValueError("empty argv")
    if not cwd.startswith("/"):
        raise ValueError("cwd must be absolute")
    if len(argv) > MAX_STRINGS or len(env) > MAX_STRINGS or not 0 <= umask <= 0o777:
        raise ValueError("too many strings or a bad umask")
    env_items = []
    for key, value in env.items():
        if not key or "=" in key:
            raise ValueError(f"bad environment name {key!r}")
        env_items.append(f"{key}={value}")
    strings = [cwd, *argv, *env_items]
    encoded = [s.encode("utf-8", "surrogateescape") for s in strings]
    if any(b"\0" in s for s in encoded):
        raise ValueError("NUL byte in argv, env or cwd")
    header = REQUEST_HEADER.pack(
        b"R", umask, len(argv), len(env_items),
        limits.cpu_soft_s, limits.cpu_hard_s, limits.fsize_bytes, limits.nofile, limits.stack_bytes, limits.as_bytes,
    )  # fmt: skip
    message = header + b"".join(s + b"\0" for s in encoded)
    if len(message) > MAX_MESSAGE:
        raise ValueError("request too big for a warm slot")
    return message


def decode_exit(message: bytes) -> tuple[int, int, int]:
    """(kind, value, err) of an 'X' message; ValueError for anything else."""
    if len(message) != EXIT.size or message[:1] != b"X":
        raise ValueError(f"expected an exit report, got {message[:16]!r}")
    _, kind, value, err = EXIT.unpack(message)
    if kind not in (X_EXITED, X_EARLY):
        raise ValueError(f"bad exit report kind {kind}")
    return kind, value, err


def decode_wiped(message: bytes) -> tuple[bool, int]:
    """(ok, errno) of a 'w' message; ValueError for anything else."""
    if len(message) != WIPED.size or message[:1] != b"w":
        raise ValueError(f"expected a wipe report, got {message[:16]!r}")
    _, ok, err = WIPED.unpack(message)
    return bool(ok), err


def decode_cleaned(message: bytes) -> int:
    """The T_* bits of a 'c' message (0 = clean); ValueError for anything else."""
    if len(message) != CLEANED.size or message[:1] != b"c":
        raise ValueError(f"expected a clean-up report, got {message[:16]!r}")
    return int(CLEANED.unpack(message)[1])
