"""Bad broker URLs and unreachable brokers: `cellblock worker` and `cellblock serve` say so in one line and exit
non-zero within seconds — never a traceback, never a retry loop (issue 4, "Bad input").

Real processes against a real redis-server (the job store must pass its own preflight first) and, for the
credential cases, a private RabbitMQ node (`rabbitmq.py`). A malformed URL is the user's fault (exit 2, field
"broker"); a broker that cannot be reached or refuses us is exit 3.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellblock.config import Settings
from cellblock.dispatch import ping_broker
from cellblock.errors import InternalError
from tests.service.conftest import CELLBLOCK, RedisServer, free_port
from tests.service.rabbitmq import RabbitMQ, running_rabbitmq

RETURNS_WITHIN_S = 20  # "a few seconds": a hang or a retry loop runs into this


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="cellblock-broker-", dir="/var/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def store(root: Path) -> Iterator[RedisServer]:
    (root / "redis").mkdir()
    server = RedisServer(root / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rabbitmq(root: Path) -> Iterator[RabbitMQ]:
    (root / "rabbitmq").mkdir()
    with running_rabbitmq(root / "rabbitmq") as node:
        yield node


def run(root: Path, *args: str) -> tuple[int, str, float]:
    """Run the CLI; (exit code, stdout + stderr, seconds)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(root),
           "CELLBLOCK_DATA_DIR": str(root / "data")}  # fmt: skip
    started = time.monotonic()
    result = subprocess.run([*CELLBLOCK, *args], env=env, capture_output=True, text=True, timeout=RETURNS_WITHIN_S,
                            check=False)  # fmt: skip
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def commands(store: RedisServer, broker: str) -> list[list[str]]:
    return [
        ["worker", "--redis", store.url, "--broker", broker, "--slots", "1"],
        ["serve", "--redis", store.url, "--broker", broker, "--port", str(free_port())],
    ]


MALFORMED = {
    "unknown scheme": ("kafka://broker:9092", "unknown scheme 'kafka'"),
    "not a URL": ("rabbitmq.example", "not a URL"),
    "no host": ("amqp://", "no host"),
    "no host, only credentials": ("amqp://guest:guest@/vhost", "no host"),
    "port out of range": ("amqp://guest:guest@127.0.0.1:70000//", "bad port"),
    "port not a number": ("amqp://guest:guest@127.0.0.1:five//", "bad port"),
    "nested path": ("amqp://guest:guest@127.0.0.1:5/a/b", "one virtual host"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_broker_url_is_refused(root: Path, store: RedisServer, case: str) -> None:
    url, why = MALFORMED[case]
    for argv in commands(store, url):
        code, output, seconds = run(root, *argv)
        print(f"{argv[0]} --broker {url}: exit {code} after {seconds:.1f} s: {output.strip()}")
        assert code == 2, output
        assert "error [broker]:" in output and why in output, output
        assert "Traceback" not in output
        assert "guest:guest" not in output  # the password is never echoed


def test_a_broker_nobody_listens_on_fails_fast(root: Path, store: RedisServer) -> None:
    url = f"amqp://cellblock:secret@127.0.0.1:{free_port()}//"
    for argv in commands(store, url):
        code, output, seconds = run(root, *argv)
        print(f"{argv[0]}: exit {code} after {seconds:.1f} s: {output.strip()}")
        assert code == 3, output
        assert "cannot reach the broker" in output and "Connection refused" in output, output
        assert "Traceback" not in output and "secret" not in output


def test_wrong_credentials_or_vhost_fail_fast(root: Path, store: RedisServer, rabbitmq: RabbitMQ) -> None:
    """A real RabbitMQ that refuses us (wrong password, a virtual host that does not exist): a configuration
    mistake, exit 2, as for Redis."""
    wrong_password = rabbitmq.url().replace(rabbitmq.password, "not-the-password")
    no_vhost = rabbitmq.url("no-such-vhost")
    for url, why in ((wrong_password, "ACCESS_REFUSED"), (no_vhost, "vhost no-such-vhost not found")):
        for argv in commands(store, url):
            code, output, seconds = run(root, *argv)
            print(f"{argv[0]}: exit {code} after {seconds:.1f} s: {output.strip()}")
            assert code == 2, output
            assert "error [broker]: the broker at" in output and "refused us" in output and why in output, output
            assert "Traceback" not in output and rabbitmq.password not in output


def test_ping_broker_passes_on_the_right_url_and_fails_on_another(store: RedisServer, rabbitmq: RabbitMQ) -> None:
    """The control for the tests above: the same check accepts a broker that works."""
    ping_broker(Settings(redis_url=store.url, broker_url=rabbitmq.url()), timeout_s=3)
    with pytest.raises(InternalError, match="cannot reach the broker"):
        ping_broker(Settings(redis_url=store.url, broker_url=rabbitmq.url().replace(str(rabbitmq.port), "1")))
