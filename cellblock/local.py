"""The embedded launcher: `cellblock serve` with nothing configured.

Theory of operation. One supervisor process (this one) starts, each in its own session:

1. a private ``redis-server``: unix socket in the data dir (mode 700), no TCP port, AOF on (fsync every
   second), ``noeviction``; it is the broker and the job store;
2. ``cellblock worker`` (Celery prefork, one sandbox slot per core) — the very command a cluster host runs;
3. ``cellblock webhooks`` (an asyncio sender that posts results to callback URLs);
4. ``cellblock serve --redis unix://…`` — the API alone, as any replica in a cluster runs it.

Before the children start it generates the cluster key that seals job traffic (``data_dir/cluster.key``,
mode 0600, see `sealing.py`) unless ``CELLBLOCK_CLUSTER_KEYS`` is set. So one machine runs the cluster code
path. A child that dies is restarted (a few times a minute at most).
On SIGINT/SIGTERM: the API stops first (no new jobs), workers get `shutdown_grace_s` to finish running jobs
(Celery warm shutdown), then are killed; a killed job is requeued by late acks. Redis is shut down last
(AOF flushed), the socket removed and every slot's cgroups swept. Started again, it first puts back any job
that was in flight when it stopped (safe: the Redis is private and no worker is running yet), so every job
accepted before runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from cellblock.config import Settings
from cellblock.errors import SandboxUnavailable
from cellblock.sealing import load_or_create_local_key, local_key_path

log = logging.getLogger(__name__)
RESTARTS_PER_MINUTE = 5


def cellblock_command() -> list[str]:
    return [sys.executable, "-m", "cellblock"]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)
    quiet: bool = False  # redis-server logs to its own file: don't hold the caller's stdout/stderr open

    def start(self) -> None:
        self.starts = [t for t in self.starts if time.monotonic() - t < 60] + [time.monotonic()]
        sink = subprocess.DEVNULL if self.quiet else None
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True, stdout=sink, stderr=sink)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate_main(self) -> None:
        if self.alive() and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def signal(self, sig: int) -> None:
        if self.alive() and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False


def redis_conf(settings: Settings) -> list[str]:
    directory = settings.redis_socket().parent
    return [
        "--port", "0", "--unixsocket", str(settings.redis_socket()), "--unixsocketperm", "700",
        "--dir", str(directory), "--appendonly", "yes", "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no",
        "--logfile", str(directory / "redis.log"), "--pidfile", str(directory / "redis.pid"),
    ]  # fmt: skip


def start_redis(settings: Settings) -> Child:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SandboxUnavailable("redis-server not found: apt-get install redis-server (scripts/setup does)")
    directory = settings.redis_socket().parent
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    child = Child("redis", [binary, *redis_conf(settings)], env={"PATH": "/usr/bin:/bin"}, quiet=True)
    child.start()
    client = redis.Redis(unix_socket_path=str(settings.redis_socket()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if client.ping():
                return child
        if not child.alive():
            raise SandboxUnavailable(f"redis-server exited; see {directory / 'redis.log'}")
        time.sleep(0.05)
    child.signal(signal.SIGKILL)
    raise SandboxUnavailable(f"redis-server did not answer within 30 s; see {directory / 'redis.log'}")


def requeue_in_flight(settings: Settings) -> int:
    """Put back jobs a previous run had taken but not finished (only safe with no worker alive)."""
    from cellblock.dispatch import make_celery

    app = make_celery(settings)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "visibility_timeout": 0}
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel  # kombu's Redis channel: its qos and unacked hash
        client = channel.client
        pending = int(client.hlen(channel.unacked_key))
        if pending:
            channel.qos.restore_visible(num=pending + 1)
        return pending


class Supervisor:
    def __init__(self, settings: Settings, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.say = say
        self.children: list[Child] = []
        self.stopping = False

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.startswith(("CELLBLOCK_", "PATH", "LANG", "LC_", "HOME"))}
        env["CELLBLOCK_REDIS_URL"] = self.settings.job_store_url()
        env["CELLBLOCK_DATA_DIR"] = str(self.settings.data_dir)
        return env

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        redis_child = start_redis(self.settings)
        self.children.append(redis_child)
        if not self.settings.cluster_keys:  # one host: generate the cluster key (0600) before any child reads it
            load_or_create_local_key(local_key_path(self.settings))
        restored = requeue_in_flight(self.settings)
        if restored:
            self.say(f"requeued {restored} job(s) that were running when Cellblock last stopped")
        base = cellblock_command()
        env = self._env()
        self.children += [
            Child("worker", [*base, "worker", "--slots", str(self.settings.slot_count())], env),
            Child("webhooks", [*base, "webhooks"], env),
            Child("api", [*base, "serve", "--redis", self.settings.job_store_url(), "--host",
                          self.settings.api_host, "--port", str(self.settings.api_port), *self._tls_args()], env),
        ]  # fmt: skip
        for child in self.children[1:]:
            child.start()
        scheme = "https" if self.settings.tls_cert_file else "http"
        self.say(f"Cellblock is starting: API on {scheme}://{self.settings.api_host}:{self.settings.api_port} "
                 f"(docs at /docs), {self.settings.slot_count()} sandbox slots. Ctrl-C stops it.")  # fmt: skip
        return self._watch()

    def _tls_args(self) -> list[str]:
        """HTTPS: the API child serves the certificate the launcher was given (checked before anything started)."""
        cert, key = self.settings.tls_cert_file, self.settings.tls_key_file
        return ["--tls-cert", str(cert), "--tls-key", str(key)] if cert and key else []

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _watch(self) -> int:
        while not self.stopping:
            time.sleep(0.2)
            for child in self.children:
                if child.alive() or self.stopping:
                    continue
                if len(child.starts) >= RESTARTS_PER_MINUTE:
                    self.say(f"{child.name} keeps dying; stopping Cellblock")
                    self.stopping = True
                    break
                self.say(f"{child.name} exited ({child.proc.returncode if child.proc else '?'}); restarting it")
                child.start()
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        by_name = {c.name: c for c in self.children}
        order = [("api", 10.0), ("webhooks", 10.0), ("worker", self.settings.shutdown_grace_s)]
        for name, grace in order:
            child = by_name.get(name)
            if child is None:
                continue
            # SIGTERM to the main process only: Celery's pool processes die on SIGTERM at once, while the
            # main process waits (warm shutdown) for them to finish their jobs.
            child.terminate_main()
            if not child.wait(grace):
                self.say(f"{name} did not stop within {grace:.0f} s; killing it (its jobs will be requeued)")
                child.signal(signal.SIGKILL)
                child.wait(10)
        redis_child = by_name.get("redis")
        if redis_child is not None:
            redis_child.signal(signal.SIGTERM)  # redis flushes the AOF and exits
            if not redis_child.wait(30):
                redis_child.signal(signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            Path(self.settings.redis_socket()).unlink()
        sweep_slots(self.settings)
        self.say("Cellblock stopped")


def sweep_slots(settings: Settings) -> None:
    """Remove whatever killed workers left: cgroups and mounts of every slot nobody holds, and every mount left
    under this data dir (the caller has stopped every process of it, whoever holds its slots' locks now)."""
    with contextlib.suppress(SandboxUnavailable):
        from cellblock.sandbox.host import SandboxHost

        host = SandboxHost(settings.model_copy(update={"isolation": "fresh"}))  # a sweep needs no warm-slot helper
        host.sweep_idle_slots()
        host.unmount_stopped_boxes()


def serve_embedded(settings: Settings, say: Callable[[str], None]) -> int:
    return Supervisor(settings, say).run()
