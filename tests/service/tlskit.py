"""Throwaway TLS material and a private Redis on a loopback TCP port (plain or TLS, always with a password).

`make_ca` and `issue` write PEM files with `cryptography` into a temp dir the test owns; nothing is trusted
beyond the test. `TcpRedis` listens on its own free port on 127.0.0.1 — never the system's 6379.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.service.conftest import free_port, wait_until


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def make_ca(directory: Path, name: str = "ca") -> tuple[Pem, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"cellblock test {name} {secrets.token_hex(4)}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = Pem(directory / f"{name}.pem", directory / f"{name}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pem.key)
    return pem, key, cert


def issue(directory: Path, name: str, ca: tuple[Pem, ec.EllipticCurvePrivateKey, x509.Certificate]) -> Pem:
    """A server (and client) certificate for 127.0.0.1 and localhost, signed by `ca`."""
    _, ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = Pem(directory / f"{name}.pem", directory / f"{name}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pem.key)
    return pem


@dataclass
class TcpRedis:
    """redis-server on 127.0.0.1:<free port> with a password; TLS-only when `tls` (server cert, CA) is given."""

    directory: Path
    tls: tuple[Pem, Path] | None = None
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def url(self, *, password: str | None = None, ca: Path | None = None) -> str:
        scheme = "rediss" if self.tls else "redis"
        url = f"{scheme}://:{self.password if password is None else password}@127.0.0.1:{self.port}/0"
        return url + (f"?ssl_ca_certs={ca}" if ca else "")

    def start(self) -> None:
        self.port = free_port()
        argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--requirepass", self.password,
                "--dir", str(self.directory), "--save", "", "--appendonly", "no", "--logfile",
                str(self.directory / "redis.log")]  # fmt: skip
        if self.tls is None:
            argv += ["--port", str(self.port)]
        else:
            server, ca = self.tls
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(server.cert),
                     "--tls-key-file", str(server.key), "--tls-ca-cert-file", str(ca),
                     "--tls-auth-clients", "no"]  # fmt: skip
        self.proc = subprocess.Popen(argv, start_new_session=True)
        wait_until(self.ping, timeout=15, what="TCP redis-server")

    def client(self) -> redis.Redis:
        kwargs: dict[str, object] = {}
        if self.tls is not None:
            kwargs = {"ssl": True, "ssl_ca_certs": str(self.tls[1])}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=True,
                           **kwargs)  # type: ignore[arg-type]  # fmt: skip

    def ping(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
