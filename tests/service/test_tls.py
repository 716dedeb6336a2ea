"""TLS everywhere (issue 4, item 3): Redis over TLS (rediss://) for every client, HTTPS for the API.

The test makes its own throwaway CA and a certificate for 127.0.0.1/localhost (`tlskit`), starts a private
redis-server that speaks only TLS and wants a password, then a real `cellblock worker` and a real
`cellblock serve --redis rediss://… --tls-cert … --tls-key …`. A job submitted over HTTPS by the SDK, which
trusts only that CA, must come back right — through the API's redis.asyncio, kombu's publisher and
consumer, and the worker's redis-py clients, all over TLS. Then the failures: a client that does not trust
the CA, a worker given a CA that did not sign the server's certificate, an API key that does not match its
certificate, and kombu asked to verify against the wrong CA.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from kombu.exceptions import OperationalError

from cellblock.client import ApiError, AsyncClient, Client
from cellblock.config import Settings
from cellblock.dispatch import make_celery
from cellblock.models import Verdict
from tests.service.conftest import CELLBLOCK, Service, free_port, wait_until
from tests.service.tlskit import Pem, TcpRedis, issue, make_ca

pytestmark = pytest.mark.sandbox

REVERSE = "print(input()[::-1])"


@dataclass
class Pki:
    ca: Pem
    server: Pem
    other_ca: Pem  # a CA that signed nothing we serve


@dataclass
class TlsStore:
    """What `Service` needs of a Redis: a URL and a stop()."""

    server: TcpRedis
    url: str

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cellblock-tls-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(root: Path) -> Pki:
    directory = root / "pki"
    directory.mkdir()
    ca = make_ca(directory, "ca")
    return Pki(ca=ca[0], server=issue(directory, "server", ca), other_ca=make_ca(directory, "other-ca")[0])


def https_ready(url: str, ca: Path) -> bool:
    return httpx.get(f"{url}/healthz", timeout=1, verify=ssl.create_default_context(cafile=str(ca))).status_code == 200


@pytest.fixture(scope="module")
def cluster(root: Path, pki: Pki) -> Iterator[Service]:
    """TLS-only Redis (password) + one worker + the API alone over HTTPS, each a real process."""
    (root / "redis").mkdir()
    redis_server = TcpRedis(root / "redis", tls=(pki.server, pki.ca.cert))
    redis_server.start()
    store = TlsStore(redis_server, redis_server.url(ca=pki.ca.cert))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(root),
           "CELLBLOCK_DATA_DIR": str(root / "data"), "CELLBLOCK_REDIS_URL": store.url}  # fmt: skip
    svc = Service(root=root, redis=store, env=env)  # type: ignore[arg-type]
    try:
        svc.start_worker(slots=1)
        svc.port = free_port()
        argv = [*CELLBLOCK, "serve", "--redis", store.url, "--port", str(svc.port), "--tls-cert", str(pki.server.cert),
                "--tls-key", str(pki.server.key)]  # fmt: skip
        with open(root / "api.log", "ab") as log:
            svc.api = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"https://127.0.0.1:{svc.port}"
        wait_until(lambda: https_ready(url, pki.ca.cert), what="the HTTPS API")
        with Client(url, verify=pki.ca.cert, max_retries=0) as client:
            wait_until(lambda: len(client.workers()) >= 1, timeout=120, interval=0.2, what="the worker")
        yield svc
    finally:
        svc.stop()


def https_url(svc: Service) -> str:
    return f"https://127.0.0.1:{svc.port}"


def test_job_over_https_and_tls_redis(cluster: Service, pki: Pki) -> None:
    with Client(https_url(cluster), verify=pki.ca.cert) as client:
        result = client.run("python3", REVERSE, stdin="olleh")
        assert result.verdict == Verdict.ACCEPTED, result
        assert result.tests[0].run is not None and result.tests[0].run.stdout == "hello\n"
        assert {w.name for w in client.workers()}  # the worker's heartbeat reached the store over TLS


def test_async_client_and_ca_file_from_the_environment(
    cluster: Service, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    monkeypatch.setenv("CELLBLOCK_CA_FILE", str(pki.ca.cert))

    async def run() -> str:
        async with AsyncClient(https_url(cluster)) as client:
            result = await client.run("python3", REVERSE, stdin="cba")
            assert result.tests[0].run is not None
            return result.tests[0].run.stdout

    assert asyncio.run(run()) == "abc\n"


def test_exec_server_with_ca_file(cluster: Service, pki: Pki, root: Path) -> None:
    program = root / "rev.py"
    program.write_text(REVERSE + "\n")
    stdin = root / "rev.in"
    stdin.write_text("321\n")
    argv = [*CELLBLOCK, "exec", str(program), "--stdin", str(stdin), "--server", https_url(cluster), "--json"]
    env = {k: v for k, v in cluster.env.items() if k != "CELLBLOCK_REDIS_URL"}
    trusted = subprocess.run([*argv, "--ca-file", str(pki.ca.cert)], env=env, capture_output=True, text=True,
                             timeout=120, check=False)  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr
    assert '"stdout": "123\\n"' in trusted.stdout
    untrusted = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert untrusted.returncode == 3, untrusted
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr and "Traceback" not in untrusted.stderr


def test_client_without_the_ca_fails_verification(cluster: Service, pki: Pki) -> None:
    for verify in (True, pki.other_ca.cert):
        with Client(https_url(cluster), verify=verify, max_retries=0) as client, pytest.raises(ApiError) as caught:
            client.languages()
        assert caught.value.status is None and caught.value.code == "connection_failed"
        assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    with pytest.raises(httpx.TransportError):  # and the port speaks no plain HTTP
        httpx.get(f"http://127.0.0.1:{cluster.port}/healthz", timeout=5)


def test_worker_with_a_ca_that_did_not_sign_the_server_exits_with_the_tls_message(cluster: Service, pki: Pki) -> None:
    assert cluster.redis.url.endswith(f"?ssl_ca_certs={pki.ca.cert}")
    url = cluster.redis.url.replace(str(pki.ca.cert), str(pki.other_ca.cert))
    done = subprocess.run([*CELLBLOCK, "worker", "--redis", url], env=cluster.env, capture_output=True, text=True,
                          timeout=20, check=False)  # fmt: skip
    assert done.returncode == 2, done
    assert "TLS certificate verification failed" in done.stderr and str(pki.other_ca.cert) in done.stderr
    assert "Traceback" not in done.stderr and cluster.redis.server.password not in done.stderr  # type: ignore[attr-defined]


def test_plain_redis_url_to_the_tls_port_is_named(cluster: Service) -> None:
    url = cluster.redis.url.replace("rediss://", "redis://").split("?")[0]
    done = subprocess.run([*CELLBLOCK, "keys", "list", "--redis", url], env=cluster.env, capture_output=True,
                          text=True, timeout=20, check=False)  # fmt: skip
    assert done.returncode == 2, done
    assert "closed the connection" in done.stderr and "rediss://" in done.stderr


def test_kombu_verifies_the_broker_certificate(cluster: Service, pki: Pki) -> None:
    """Celery's Redis transport would fall back to no verification for a bare rediss:// URL; ours must not."""
    good = Settings(redis_url=cluster.redis.url, data_dir=Path(cluster.env["CELLBLOCK_DATA_DIR"]))
    with make_celery(good).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.default_channel.client.ping()  # type: ignore[attr-defined]
    wrong_ca = cluster.redis.url.replace(str(pki.ca.cert), str(pki.other_ca.cert))
    system_store = cluster.redis.url.split("?")[0]  # kombu alone would connect to this one unverified
    for url in (wrong_ca, system_store):
        bad = good.model_copy(update={"redis_url": url})
        with make_celery(bad).connection_for_write() as conn, pytest.raises(OperationalError, match="CERTIFICATE_VE"):
            conn.ensure_connection(max_retries=1)


def test_serve_refuses_a_key_that_does_not_match_its_certificate(cluster: Service, pki: Pki) -> None:
    argv = [*CELLBLOCK, "serve", "--redis", cluster.redis.url, "--port", str(free_port()), "--tls-cert",
            str(pki.server.cert), "--tls-key", str(pki.ca.key)]  # fmt: skip
    done = subprocess.run(argv, env=cluster.env, capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 2, done
    assert "does not match the certificate" in done.stderr and "Traceback" not in done.stderr
    missing = subprocess.run([*argv[:-1], str(pki.server.key) + ".missing"], env=cluster.env, capture_output=True,
                             text=True, timeout=20, check=False)  # fmt: skip
    assert missing.returncode == 2 and "No such file or directory" in missing.stderr, missing


@pytest.mark.slow
def test_embedded_serve_speaks_https(root: Path, pki: Pki) -> None:
    data = root / "embedded"
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(root),
           "CELLBLOCK_DATA_DIR": str(data)}  # fmt: skip
    argv = [sys.executable, "-m", "cellblock", "serve", "--port", str(port), "--slots", "1", "--tls-cert",
            str(pki.server.cert), "--tls-key", str(pki.server.key)]  # fmt: skip
    log = root / "embedded.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"https://127.0.0.1:{port}"
    try:
        wait_until(lambda: https_ready(url, pki.ca.cert), timeout=90, interval=0.2, what="embedded HTTPS API")
        with Client(url, verify=pki.ca.cert) as client:
            wait_until(lambda: len(client.workers()) >= 1, timeout=120, interval=0.2, what="the embedded worker")
            result = client.run("python3", REVERSE, stdin="sptth")
        assert result.tests[0].run is not None and result.tests[0].run.stdout == "https\n"
        assert f"API on https://127.0.0.1:{port}" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
