"""A private RabbitMQ node for tests: its own node name, ports, epmd, cookie, data, config and user.

Nothing of the system's RabbitMQ is used or touched: not its node (rabbit@localhost), its AMQP port 5672, its
epmd on 4369, its cookie, /etc/rabbitmq (the config env file is replaced) nor /var/lib/rabbitmq. We run the
real scripts in /usr/lib/rabbitmq/bin (the /usr/sbin wrappers would `su rabbitmq` and cd to its home). Every
port is a free one: AMQP, the node's distribution port, the CLI's distribution ports, and epmd, which we start
ourselves (ERL_EPMD_PORT) so that `erl` finds it and starts none of its own. Every process of the node (epmd,
the server script, beam.smp and its port programs, each CLI call) carries a marker in its environment, by
which `stop` finds and kills whatever is left, and nothing else.

`wrap` prefixes every command (e.g. ``["ip", "netns", "exec", "hostA"]``) and `host` is the address AMQP
listens on, so a multi-host test can run a node inside a network namespace; `loopback_users = none` lets its
user log in from anywhere. Start-up takes about 5 s (printed): share one node per module where tests don't
kill it, and give each test a virtual host of its own (`add_vhost`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from tests.service.conftest import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
EPMD = "/usr/bin/epmd"
MARKER = "CELLBLOCK_TEST_RABBITMQ"


class RabbitMQ:
    """One private node in ``directory`` (created by the caller, removed by the caller)."""

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", wrap: list[str] | None = None) -> None:
        self.directory = directory
        self.host = host
        self.wrap = wrap or []
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.ctl_port = free_port()  # CLI nodes take the first free one of ctl_port..ctl_port+10
        self.node = f"cbtest{secrets.token_hex(4)}@localhost"
        self.user = "cellblock"
        self.password = secrets.token_hex(12)
        self.server: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0
        self._write_files()

    def _write_files(self) -> None:
        for name in ("home", "mnesia", "log"):
            (self.directory / name).mkdir(exist_ok=True)
        (self.directory / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq/rabbitmq-env.conf
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.host}:{self.port}\n"
            f"default_user = {self.user}\n"
            f"default_pass = {self.password}\n"
            "loopback_users = none\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )

    def env(self) -> dict[str, str]:
        d = self.directory
        ctl_max = min(self.ctl_port + 10, 65535)
        return {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8", "HOME": str(d / "home"),
            MARKER: str(d),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"), "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_NODENAME": self.node, "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.ctl_port), "RABBITMQ_CTL_DIST_PORT_MAX": str(ctl_max),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
        }  # fmt: skip

    def url(self, vhost: str = "/") -> str:
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/{quote(vhost, safe='')}"

    # --- life cycle ----------------------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> float:
        """Start the node (and our epmd, unless it runs); return the seconds until `await_startup` said ready.

        A first start whose listener port was taken in the meantime (free_port() only found it free a moment ago;
        other tests pick ports too) tries again on new ports; a restart keeps its port (clients reconnect to it).
        """
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except RuntimeError as exc:
                if self.startup_s or attempt == 2 or "eaddrinuse" not in str(exc):
                    raise
                self.port, self.dist_port = free_port(), free_port()
                self._write_files()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> float:
        started = time.monotonic()
        if self.epmd is None or self.epmd.poll() is not None:
            self.epmd = subprocess.Popen([*self.wrap, EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                                         env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)  # fmt: skip
        log = open(self.directory / "server.out", "ab")  # noqa: SIM115 - lives with the process
        self.server = subprocess.Popen([*self.wrap, str(RABBITMQ_BIN / "rabbitmq-server")], env=self.env(),
                                       cwd=self.directory, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        deadline = started + timeout
        while True:
            # Fails at once while the node is not yet registered with epmd; then waits for the boot to finish.
            left = max(1, int(deadline - time.monotonic()))
            if self.ctl("await_startup", "--timeout", str(left), check=False, timeout=left + 10).returncode == 0:
                break
            if self.server.poll() is not None or time.monotonic() > deadline:
                tail = (self.directory / "server.out").read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"RabbitMQ node {self.node} did not start:\n{tail}")
            time.sleep(0.2)
        self.startup_s = time.monotonic() - started
        return self.startup_s

    def ctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """rabbitmqctl against this node (and only this node: -n, our epmd, our cookie)."""
        result = subprocess.run([*self.wrap, str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
                                env=self.env(), cwd=self.directory, capture_output=True, text=True,
                                timeout=timeout, check=False)  # fmt: skip
        if check and result.returncode != 0:
            output = result.stdout + result.stderr
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: exit {result.returncode}\n{output}")
        return result

    def kill(self) -> None:
        """SIGKILL the node (a crash: nothing is flushed, nothing closed cleanly); our epmd stays up."""
        epmd = self.epmd.pid if self.epmd else None
        for pid in self.processes():
            if pid != epmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.server is not None:
            self.server.wait(30)

    def stop(self) -> None:
        """`rabbitmqctl stop`, then SIGKILL whatever of this node is left, epmd included."""
        if self.server is not None and self.server.poll() is None:
            self.ctl("stop", check=False, timeout=60)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.server.wait(30)
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in (self.server, self.epmd):
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait(10)

    def processes(self) -> list[int]:
        """Live processes of this node: those whose environment carries our marker."""
        marker = f"{MARKER}={self.directory}\0".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if marker in (entry / "environ").read_bytes():
                        found.append(int(entry.name))
        return found

    # --- inspection ----------------------------------------------------------------------------------------

    def add_vhost(self, name: str) -> str:
        """A fresh virtual host our user may use fully; returns its URL."""
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, self.user, ".*", ".*", ".*")
        return self.url(name)

    def queues(self, vhost: str = "/") -> dict[str, tuple[int, int]]:
        """queue name → (messages ready, messages delivered but unacknowledged)."""
        out = self.ctl("list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "messages_ready",
                       "messages_unacknowledged").stdout  # fmt: skip
        rows = [line.split("\t") for line in out.splitlines() if line.strip()]
        return {name: (int(ready), int(unacked)) for name, ready, unacked in rows}

    def leftovers(self, vhost: str = "/", prefix: str = "lang.") -> tuple[int, int]:
        """(ready, unacked) summed over the language queues of a virtual host."""
        counts = [c for name, c in self.queues(vhost).items() if name.startswith(prefix)]
        return sum(r for r, _ in counts), sum(u for _, u in counts)

    def log_lines(self, needle: str) -> list[str]:
        """Lines of the node's log that contain ``needle`` (e.g. 'missed heartbeats')."""
        lines: list[str] = []
        for path in (self.directory / "log").glob("*.log"):
            lines += [line for line in path.read_text(errors="replace").splitlines() if needle in line]
        return lines


@contextlib.contextmanager
def running_rabbitmq(directory: Path, **kwargs: object) -> Iterator[RabbitMQ]:
    """A started node, stopped afterwards whatever happens (the caller removes ``directory``)."""
    node = RabbitMQ(directory, **kwargs)  # type: ignore[arg-type]
    try:
        print(f"\nRabbitMQ {node.node} started in {node.start():.1f} s")
        yield node
    finally:
        node.stop()
