"""Real service parts for tests: a private redis-server, real `cellblock worker` processes, the real API.

Each test module gets its own Redis on a unix socket in a temp dir (never a shared or system Redis), its
own data dir, and processes it starts and stops itself. Nothing here is a fake.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cellblock.config import Settings
from cellblock.local import sweep_slots

CELLBLOCK = [sys.executable, "-m", "cellblock"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def assert_error(response: httpx.Response, status: int | tuple[int, ...], field: str | None) -> dict[str, Any]:
    """The shared error shape, naming `field`, with one of the expected statuses and no traceback."""
    assert response.status_code in (status if isinstance(status, tuple) else (status,)), response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["code"] and body["error"]["message"], body
    assert body["error"]["field"] == field, body
    assert "Traceback" not in response.text
    error: dict[str, Any] = body["error"]
    return error


@dataclass
class RedisServer:
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.proc = subprocess.Popen([
            shutil.which("redis-server") or "redis-server", "--port", "0", "--unixsocket", str(self.socket),
            "--unixsocketperm", "700", "--dir", str(self.directory), "--appendonly", "yes",
            "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "redis.log"),
        ], start_new_session=True)  # fmt: skip
        wait_until(lambda: self.client().ping(), what="redis-server")

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), decode_responses=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@dataclass
class Service:
    """A cluster in miniature: one Redis, N workers, one API (each a real process)."""

    root: Path
    redis: RedisServer
    env: dict[str, str]
    port: int = 0
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    webhooks: subprocess.Popen[bytes] | None = None
    broker_url: str | None = None  # --broker for workers, webhooks and the API (None: the Redis is the broker)

    @property
    def broker_args(self) -> list[str]:
        return ["--broker", self.broker_url] if self.broker_url else []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_worker(self, slots: int = 2, name: str | None = None) -> subprocess.Popen[bytes]:
        args = [*CELLBLOCK, "worker", "--redis", self.redis.url, *self.broker_args, "--slots", str(slots)]
        if name:
            args += ["--name", name]
        log = open(self.root / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        return proc

    def start_webhooks(self) -> None:
        log = open(self.root / "webhooks.log", "wb")  # noqa: SIM115
        argv = [*CELLBLOCK, "webhooks", "--redis", self.redis.url, *self.broker_args]
        self.webhooks = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_api(self) -> None:
        self.port = self.port or free_port()
        log = open(self.root / "api.log", "ab")  # noqa: SIM115
        argv = [*CELLBLOCK, "serve", "--redis", self.redis.url, *self.broker_args, "--port", str(self.port)]
        self.api = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200, what="the API")

    def wait_ready(self, workers: int = 1, timeout: float = 120) -> None:
        def ready() -> bool:
            body = httpx.get(f"{self.base_url}/v1/workers", timeout=2).json()
            return len(body["workers"]) >= workers

        wait_until(ready, timeout=timeout, interval=0.2, what=f"{workers} worker(s)")

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    @staticmethod
    def kill_group(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL) -> None:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)

    def stop(self) -> None:
        self.kill_group(self.api, signal.SIGTERM)
        self.kill_group(self.webhooks, signal.SIGTERM)
        for worker in self.workers:
            self.kill_group(worker, signal.SIGTERM)
        for proc in [self.api, self.webhooks, *self.workers]:
            self.kill_group(proc, signal.SIGKILL)
        self.redis.stop()
        # A worker killed by a test leaves its slots' /box mounts under our data dir (a warm slot keeps its /box
        # mounted for its life) and their cgroups: swept as `cellblock serve` does at its stop, so that nothing
        # of this service outlives it on the machine.
        sweep_slots(Settings(data_dir=self.root / "data"))


def make_service(broker_url: str | None = None, **env_overrides: str) -> Service:
    root = Path(tempfile.mkdtemp(prefix="cellblock-svc-", dir="/var/tmp"))
    root.chmod(0o711)
    redis_dir = root / "redis"
    redis_dir.mkdir()
    server = RedisServer(redis_dir)
    server.start()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(root),
           "CELLBLOCK_DATA_DIR": str(root / "data"), "CELLBLOCK_REDIS_URL": server.url, **env_overrides}  # fmt: skip
    return Service(root=root, redis=server, env=env, broker_url=broker_url)


@contextlib.contextmanager
def made_service(broker_url: str | None = None, **env_overrides: str) -> Iterator[Service]:
    """`make_service`, stopped and removed afterwards whatever happens."""
    svc = make_service(broker_url, **env_overrides)
    try:
        yield svc
    finally:
        svc.stop()
        shutil.rmtree(svc.root, ignore_errors=True)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """Redis + one 2-slot worker + webhooks + the API, shared by the tests of one module."""
    with made_service() as svc:
        svc.start_worker()
        svc.start_webhooks()
        svc.start_api()
        svc.wait_ready()
        yield svc


@pytest.fixture
def api(service: Service) -> Iterator[httpx.Client]:
    with service.client() as client:
        yield client
