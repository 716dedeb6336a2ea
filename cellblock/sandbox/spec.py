"""What one sandboxed step is asked to do, and what it reports. Pure data; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class RunLimits:
    """Limits of one step, in the units the kernel wants them."""

    cpu_time_s: float
    wall_time_s: float
    memory_kib: int
    processes: int  # the program's own processes and threads; the namespace init is added on top
    output_bytes: int  # cap on stdout and on stderr, each
    file_size_bytes: int  # RLIMIT_FSIZE for files in /box (stdout/stderr are also bounded by it)
    open_files: int = 256
    stack_kib: int = 256 * 1024
    address_space: bool = True  # RLIMIT_AS = memory limit; off for JVM, Node, Go, .NET, GHC

    @property
    def address_space_bytes(self) -> int:
        """RLIMIT_AS is a backstop, not the memory limit: the cgroup is (and its OOM counter gives MLE).

        Twice the limit plus 64 MiB leaves room for the loader, shared libraries and allocator arenas (an
        AS equal to the limit stops bwrap itself from loading libc under small limits), while an absurd
        single allocation still fails at once instead of being overcommitted.
        """
        return 2 * self.memory_kib * 1024 + (64 << 20)

    @property
    def fsize_bytes(self) -> int:
        """RLIMIT_FSIZE covers every file the program writes, including our stdout/stderr files.

        One byte over the output cap, so that "exactly at the cap" is not an error and "over it" is seen.
        """
        return max(self.output_bytes, self.file_size_bytes) + 1


@dataclass(frozen=True)
class RunSpec:
    """One program run inside a slot's /box."""

    argv: list[str]
    limits: RunLimits
    stdin: bytes = b""
    env: dict[str, str] = field(default_factory=dict)
    ro_binds: list[str] = field(default_factory=list)  # extra host paths bound read-only at the same place
    network: bool = False
    box_dir: Path | None = None  # host dir bound at /box; the slot's own box when None
    merge_stderr: bool = False  # the program's fd 2 is its fd 1 (one file, one offset: `2>&1`, in order)
    live_input: LiveInput | None = None  # interactive: stdin is a pipe fed from this, which also sends signals
    prewarm: str | None = None  # the language's `prewarm` ("python"): a warm slot may run it in a zygote
    prewarm_modules: tuple[str, ...] = ()  # modules that zygote imports before it forks (the language's TOML)


@dataclass(frozen=True)
class CgroupStats:
    cpu_time_ns: int
    memory_peak_bytes: int
    oom_kills: int


@dataclass(frozen=True)
class RawResult:
    """What the supervisor observed about one run, before any judgement about the user's expectations."""

    outcome: str  # a models.Outcome value
    exit_code: int | None
    signal: str | None
    cpu_time_s: float
    wall_time_s: float
    memory_kib: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    message: str | None
    box: Path | None = None
    # Which isolation ran it (models.ISOLATIONS): "fresh", "warm", "warm-shared" or "prewarmed" (a fork of a
    # pre-warmed interpreter). Decided by host.Sandbox.run, which also sets the note: why a run that a warm setting
    # would run warm ran fresh, in words (None when it ran as the setting says, and always under "fresh").
    isolation: str = "fresh"
    isolation_note: str | None = None


class LiveInput(Protocol):
    """Stdin and signals for an interactive run, as they arrive (the worker reads them from the job's stream)."""

    def take(self) -> list[tuple[str, bytes]]:
        """Everything that arrived since the last call, never blocking: ("stdin", bytes), ("eof", b"") or
        ("signal", b"SIGINT")."""


class RunObserver(Protocol):
    """Optional live view of a run: output as it is produced, and a way to stop it (cancellation)."""

    def output(self, stream: str, data: bytes) -> None:
        """New bytes of "stdout" or "stderr", in order, never past the output cap."""

    def cancelled(self) -> bool:
        """True once the run should be killed; polled by the watcher between wake-ups."""
