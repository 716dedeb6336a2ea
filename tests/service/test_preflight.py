"""Bad job-store settings at start: every command that needs Redis says what is wrong in one line and exits
non-zero within seconds — never a hang, never a traceback (issue 4: "Redis unreachable at start").

Each case runs the real CLI as a subprocess against a real redis-server (password on a free loopback port),
a free port nobody listens on, a socket path that does not exist, or a port that accepts and never answers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.conftest import CELLBLOCK, free_port
from tests.service.tlskit import TcpRedis

# Well above the 3 s connect/read timeout of a preflight plus Python's start-up; the issue asks for "not a hang".
DEADLINE_S = 20.0
COMMANDS = {
    "serve": ["serve", "--port", "0"],
    "worker": ["worker"],
    "webhooks": ["webhooks"],
    "keys": ["keys", "list"],
}


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cellblock-preflight-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tcp_redis(root: Path) -> Iterator[TcpRedis]:
    (root / "redis").mkdir()
    server = TcpRedis(root / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port whose kernel completes the TCP handshake (listen backlog) but whose owner never reads or answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def run(root: Path, command: str, url: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(root),
           "CELLBLOCK_DATA_DIR": str(root / "data")}  # fmt: skip
    started = time.monotonic()
    done = subprocess.run([*CELLBLOCK, *COMMANDS[command], "--redis", url], env=env, capture_output=True, check=False,
                          text=True, timeout=DEADLINE_S)  # fmt: skip
    elapsed = time.monotonic() - started
    print(f"{command}: exit {done.returncode} after {elapsed:.2f} s: {done.stderr.strip()}")
    return done, elapsed


def assert_one_line(done: subprocess.CompletedProcess[str], status: int, *words: str, secret: str = "") -> None:
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error [redis]: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for word in words:
        assert word in lines[0], lines[0]
    if secret:
        assert secret not in done.stderr + done.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_nothing_listens_on_the_port(root: Path, command: str) -> None:
    port = free_port()
    done, _ = run(root, command, f"redis://:pw-not-shown@127.0.0.1:{port}/0")
    assert_one_line(done, 3, "connection refused", f"127.0.0.1:{port}", "CELLBLOCK_REDIS_URL", secret="pw-not-shown")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_socket_does_not_exist(root: Path, command: str) -> None:
    path = root / "nowhere" / "redis.sock"
    done, _ = run(root, command, f"unix://{path}")
    assert_one_line(done, 3, "no such socket", str(path))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_wrong_password(root: Path, tcp_redis: TcpRedis, command: str) -> None:
    done, _ = run(root, command, tcp_redis.url(password="not-the-password"))
    assert_one_line(done, 2, "wrong password", secret="not-the-password")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_tcp_without_password_is_refused_even_on_loopback(root: Path, tcp_redis: TcpRedis, command: str) -> None:
    done, _ = run(root, command, f"redis://127.0.0.1:{tcp_redis.port}/0")
    assert_one_line(done, 2, "without a password", "requirepass", "redis://:PASSWORD@host:port/0")


def test_acl_user_without_password_is_refused(root: Path, tcp_redis: TcpRedis) -> None:
    done, _ = run(root, "worker", f"redis://cellblock@127.0.0.1:{tcp_redis.port}/0")
    assert_one_line(done, 2, "without a password")


def test_server_that_never_answers_times_out(root: Path, silent_port: int) -> None:
    done, elapsed = run(root, "worker", f"redis://:pw@127.0.0.1:{silent_port}/0")
    assert_one_line(done, 3, "timed out after 3 s")
    assert elapsed < DEADLINE_S


def test_plain_url_to_a_password_protected_server_passes_preflight(root: Path, tcp_redis: TcpRedis) -> None:
    """The control: with the right password the same command gets past the preflight (keys list answers)."""
    done, _ = run(root, "keys", tcp_redis.url())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ID"), done.stdout


def test_missing_ca_file_is_named(root: Path) -> None:
    done, _ = run(root, "webhooks", f"rediss://:pw@127.0.0.1:{free_port()}/0?ssl_ca_certs={root}/no-ca.pem")
    assert_one_line(done, 2, f"ssl_ca_certs={root}/no-ca.pem does not exist")


def test_tls_option_on_a_plain_url_is_refused(root: Path) -> None:
    done, _ = run(root, "keys", f"redis://:pw@127.0.0.1:{free_port()}/0?ssl_ca_certs=/etc/ssl/certs/ca.pem")
    assert_one_line(done, 2, "use a rediss:// URL")


def test_acl_user(root: Path, tcp_redis: TcpRedis) -> None:
    """Redis 6+ ACL users work as well as requirepass: USER:PASSWORD in the URL."""
    with tcp_redis.client() as admin:
        admin.acl_setuser("cellblock", enabled=True, passwords=["+acl-secret"], keys=["*"], channels=["*"],
                          commands=["+@all"])  # fmt: skip
    done, _ = run(root, "keys", f"redis://cellblock:acl-secret@127.0.0.1:{tcp_redis.port}/0")
    assert done.returncode == 0, done.stderr
    done, _ = run(root, "keys", f"redis://cellblock:not-it@127.0.0.1:{tcp_redis.port}/0")
    assert_one_line(done, 2, "wrong password", secret="not-it")


def test_tls_url_to_a_plain_port_is_named(root: Path, tcp_redis: TcpRedis) -> None:
    """A plain Redis waits for a command while the client waits for a TLS handshake: a timeout that says so."""
    url = tcp_redis.url().replace("redis://", "rediss://")
    done, _ = run(root, "webhooks", url)
    assert_one_line(done, 3, "timed out after 3 s waiting for the TLS handshake", "TLS port", secret=tcp_redis.password)
