"""Hosts for tests, built from Linux network namespaces on this one machine.

Theory of operation. A `Network` is a small LAN that exists only inside namespaces it creates:

* a *switch* namespace holds a bridge `br0`; each host is a namespace whose `eth0` is one end of a veth pair,
  the other end a port of that bridge. veth pairs are created from inside the switch namespace with their
  host end placed straight into the host's namespace (`ip -n SWITCH link add … peer … netns HOST`), so no
  interface, address, route or bridge ever exists in the root namespace. Each host gets one address from a
  private /24 and its loopback up; hosts reach each other through the bridge and nothing else (no gateway).
* a process runs on a host via `nsenter --net=/run/netns/NAME -- argv…` (argv lists, never a shell). Not
  `ip netns exec`: it remounts /sys for the namespace, which hides /sys/fs/cgroup, and the sandbox needs
  cgroups. Every process starts in its own session, so killing its process group kills what it forked.
* the test itself is a client on a host of its own: `entered(host)` moves the *calling thread* into the
  host's namespace (network namespaces are per thread: setns(2) with CLONE_NEWNET), and threads started
  inside inherit it. Sockets keep the namespace they were created in, so clients are made inside.
* cleanup (`close`, run on any exit): SIGTERM then SIGKILL every process group started here, then SIGKILL any
  process still living in one of our namespaces (found by the namespace's inode in /proc/PID/ns/net) or
  whose argv names our temp dir (a sandbox runs in a network namespace of its own but its launcher's argv
  names the data dir), then `ip netns del` (which takes the bridge and veths with it), then the temp dir.
  `leftovers()` reports anything that survived, for the test to assert on.

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2; `Network.__init__` fails with a clear message
otherwise — a missing capability is a failed test here, never a silent skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.service.test_reliability import describe_and_kill, process_table, tagged_processes

NETNS_DIR = Path("/run/netns")
ROOT_VIEW = (["ip", "-o", "link", "show"], ["ip", "-o", "addr", "show"], ["ip", "route", "show", "table", "all"])
CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at `fd`."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def netns_inode(path: Path | str) -> int:
    return os.stat(path).st_ino


def root_namespace_view() -> list[str]:
    """The interfaces, addresses and routes of the namespace we run in, minus counters that move on their own
    (for a test to show a `Network` adds nothing there)."""
    lines = []
    for argv in ROOT_VIEW:
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        lines += [re.sub(r" (state|qlen|valid_lft|preferred_lft) \S+", "", line).strip() for line in out.splitlines()]
    return sorted(lines)


@dataclass
class Host:
    """One machine of the test LAN: a network namespace with one address."""

    name: str  # the namespace's name (unique per run)
    label: str  # A, B, C… as the test calls it
    address: str

    @property
    def netns(self) -> Path:
        return NETNS_DIR / self.name

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run on this host (its network namespace; the same filesystem, pids and users)."""
        return ["nsenter", f"--net={self.netns}", "--", *argv]


@dataclass
class Network:
    """A bridge in a switch namespace and hosts on it; `close()` removes all of it and everything started."""

    labels: Sequence[str]
    subnet: str = "10.99.0"  # a /24 that exists only inside our namespaces
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    root: Path = field(init=False)
    hosts: dict[str, Host] = field(init=False, default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(init=False, default_factory=list)
    created: list[str] = field(init=False, default_factory=list)
    inodes: set[int] = field(init=False, default_factory=set)
    killed_at_close: list[str] = field(init=False, default_factory=list)  # survivors of their process group

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"cellblock-net-{self.run_id}-", dir="/var/tmp"))
        self.root.chmod(0o711)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    @property
    def switch(self) -> str:
        return f"cbSW-{self.run_id}"

    def _add_namespace(self, name: str) -> None:
        try:
            _ip("netns", "add", name)
        except (RuntimeError, FileNotFoundError) as exc:
            raise RuntimeError(f"this test builds its hosts with `ip netns` (root and iproute2 needed): {exc}") from exc
        self.created.append(name)
        self.inodes.add(netns_inode(NETNS_DIR / name))
        _ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for number, label in enumerate(self.labels, start=1):
            host = Host(name=f"cb{label}-{self.run_id}", label=label, address=f"{self.subnet}.{number}")
            self._add_namespace(host.name)
            port = f"p{label}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.name)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.name, "link", "set", "eth0", "up")
            self.hosts[label] = host

    def __getitem__(self, label: str) -> Host:
        return self.hosts[label]

    # --- processes -----------------------------------------------------------------------------------------

    def start(
        self, host: Host, argv: Sequence[str], *, env: dict[str, str], log: str, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` on `host` in a session of its own, output to `root/log`; closed by `close()`."""
        out = open(self.root / log, "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(host.argv(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        out.close()
        self.procs.append(proc)
        return proc

    def run(self, host: Host, argv: Sequence[str], *, env: dict[str, str], timeout: float = 60) -> str:
        """Run `argv` on `host` to its end; its stdout (stderr in the error if it fails)."""
        done = subprocess.run(host.argv(argv), env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[:4]} on {host.label} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    @contextlib.contextmanager
    def entered(self, host: Host) -> Iterator[None]:
        """The calling thread (and threads it starts meanwhile) inside `host`'s network namespace."""
        back = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        there = os.open(host.netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(there)
            try:
                yield
            finally:
                _setns(back)
        finally:
            os.close(there)
            os.close(back)

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every process's log (printed when a test fails: close() removes them)."""
        out = []
        for log in sorted(self.root.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def processes(self, host: Host | None = None) -> list[int]:
        """Every live process in one of our namespaces (or `host`'s only), or — unless `host` is given — whose
        argv names our temp dir or run id."""
        inodes = {netns_inode(host.netns)} if host else self.inodes
        inside = []
        for pid in process_table():
            with contextlib.suppress(OSError):
                if netns_inode(f"/proc/{pid}/ns/net") in inodes:
                    inside.append(pid)
        tagged = [] if host else tagged_processes({str(self.root), self.run_id})
        return sorted({*inside, *tagged} - {os.getpid()})

    def leftovers(self) -> tuple[list[str], list[str]]:
        """(our namespaces still listed by `ip netns list`, processes of ours still alive) — both should be []."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        names = [line.split()[0] for line in listed.splitlines() if line.strip()]
        return [n for n in names if n in self.created], [f"pid {pid}" for pid in self.processes()]

    def close(self) -> None:
        """Stop and remove everything; `killed_at_close` describes processes that outlived their group."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group, also when its leader has exited
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.killed_at_close += describe_and_kill(self.processes())
        for _ in range(50):  # SIGKILLed processes leave their namespaces a moment later
            if not self.processes():
                break
            time.sleep(0.1)
        for name in reversed(self.created):
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", name)
        shutil.rmtree(self.root, ignore_errors=True)
