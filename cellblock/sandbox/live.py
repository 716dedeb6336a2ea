"""Interactive runs: stdin through a pipe, fed while the program runs, and signals to the program's processes.

Theory of operation. For a run with `RunSpec.live_input`, the supervisor gives the program the read end of a
pipe as stdin instead of a file, and keeps the write end (non-blocking, O_CLOEXEC: nothing else inherits
it). On every wake-up of its watch loop (the poll interval) it calls `LivePump.pump`, which takes what
arrived from the `LiveInput` (never blocking), writes as much pending stdin as the pipe accepts, closes the
write end once end-of-input was asked for and everything is written (the program then reads EOF), and
delivers signals.

Signals go to the program's own processes only: the pids in the run's cgroup (where the launcher put every
process of the run before the program existed, and which nothing inside can leave: cgroup namespace, no
privileges), minus bubblewrap's monitor and the namespace's init. Each pid is pinned with a pidfd, then
checked to be in the cgroup still, then signalled through the pidfd, so a pid that was reused by another
process in between is never signalled. Only the names in `models.LIVE_SIGNALS` are delivered (Piston's list,
which Linux has; `SIGNALS` maps them); anything else is ignored here (the API refuses it before it gets this far).

The non-interactive path is untouched: no pump exists, stdin stays a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal

from cellblock.models import LIVE_SIGNALS
from cellblock.sandbox.cgroups import RunCgroup
from cellblock.sandbox.spec import LiveInput

_ALIASES = {"SIGCLD": "SIGCHLD", "SIGIOT": "SIGABRT", "SIGPOLL": "SIGIO", "SIGUNUSED": "SIGSYS"}
SIGNALS: dict[str, int] = {
    name: int(getattr(signal, _ALIASES.get(name, name)))
    for name in LIVE_SIGNALS
    if hasattr(signal, _ALIASES.get(name, name))
}
MAX_PENDING_BYTES = 4 << 20  # stdin the program has not read yet; more than this is dropped


class LivePump:
    """Owns the write end of an interactive run's stdin pipe. Not thread-safe: the watch loop drives it."""

    def __init__(self, source: LiveInput, write_fd: int, cgroup: RunCgroup) -> None:
        self.source = source
        self.fd: int | None = write_fd
        self.cgroup = cgroup
        self.exclude: set[int] = set()  # bubblewrap's monitor and the namespace init: not the program
        self.pending = bytearray()
        self.eof = False
        os.set_blocking(write_fd, False)

    def pump(self) -> None:
        for kind, data in self.source.take():
            if kind == "stdin" and self.fd is not None and len(self.pending) + len(data) <= MAX_PENDING_BYTES:
                self.pending += data
            elif kind == "eof":
                self.eof = True
            elif kind == "signal":
                self.deliver(data.decode("ascii", "replace"))
        self._flush()

    def _flush(self) -> None:
        while self.pending and self.fd is not None:
            try:
                written = os.write(self.fd, self.pending)
            except BlockingIOError:
                return  # the pipe is full: the program has not read yet
            except OSError as exc:  # EPIPE: the program closed its stdin or exited
                if exc.errno != errno.EPIPE:
                    raise
                self.pending.clear()
                self.close()
                return
            del self.pending[:written]
        if self.eof and not self.pending:
            self.close()

    def deliver(self, name: str) -> int:
        """Send `name` to each process of the program; how many got it."""
        number = SIGNALS.get(name)
        if number is None:
            return 0
        sent = 0
        for pid in self.cgroup.pids():
            if pid in self.exclude:
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue  # gone already
            try:
                if pid in self.cgroup.pids():  # still the run's process, pinned by the pidfd from here on
                    signal.pidfd_send_signal(pidfd, number)
                    sent += 1
            except ProcessLookupError:
                pass
            finally:
                os.close(pidfd)
        return sent

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
