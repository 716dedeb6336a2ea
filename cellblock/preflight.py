"""Checks a command makes before it starts: the job store's URL and reachability, and the API's certificate.

Theory of operation. `cellblock serve --redis`, `worker`, `webhooks` and `keys --redis` call `check_store`
(and `check_broker` for a Redis broker of its own) before anything else, so a mistake is one clear line and
a non-zero exit within seconds — never a hang on a retry loop, never a traceback. In order:

1. the URL parses (`redis_url.parse_redis_url`);
2. a TCP Redis has a password. Any user of this machine can reach a loopback port too, so loopback is not
   exempt; only a unix socket (whose directory mode guards it) may go without one;
3. the TLS files named in the URL are readable;
4. one PING with short timeouts and no retries; a failure is named: connection refused, no such socket,
   timeout, TLS verification failed, TLS handshake failed, wrong password, password missing.

`check_api_tls` loads the API's certificate and key the way uvicorn will, so a missing file or a key that
does not match its certificate is reported before anything starts.

A misconfiguration (bad URL, no password, unreadable file, wrong password, a certificate that does not
verify) is a `UserError` (CLI exit 2); a server that cannot be reached is an `InternalError` (exit 3).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cellblock.config import Settings
from cellblock.errors import InternalError, UserError
from cellblock.redis_url import BROKER_SETTING, JOB_STORE_SETTING, RedisTarget, is_redis_url, parse_redis_url, redacted

TIMEOUT_S = 3.0  # connect, TLS handshake and the PING each; a healthy Redis answers in milliseconds


def check_url(url: str, setting: str = JOB_STORE_SETTING) -> RedisTarget:
    """Steps 1–3: the URL's form, its password and its TLS files, without connecting."""
    target = parse_redis_url(url, setting)
    if target.is_tcp and not target.password:
        raise UserError(f"{setting}: {redacted(url)} reaches Redis over TCP without a password, and anyone who can "
                        "reach that port could read and forge jobs. Set one on the server (requirepass, or an ACL "
                        "user) and put it in the URL: redis://:PASSWORD@host:port/0 or "
                        "redis://USER:PASSWORD@host:port/0 (rediss:// for TLS)", field="redis")  # fmt: skip
    for option, path in target.tls.files() if target.tls else []:
        if not os.access(path, os.R_OK):
            why = "does not exist" if not os.path.exists(path) else "is not readable by this user"
            raise UserError(f"{setting}: {option}={path} {why}", field="redis")
    return target


def ping(target: RedisTarget, setting: str = JOB_STORE_SETTING) -> None:
    """Step 4: one PING, or an error that says what failed."""
    client = redis.Redis(**target.redis_kwargs(), socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S,
                         retry=Retry(NoBackoff(), 0))  # fmt: skip
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        what, user_fault = describe(exc, target)
        error = UserError if user_fault else InternalError
        raise error(f"cannot use Redis at {redacted(target.url)} ({setting}): {what}", field="redis") from exc
    finally:
        client.close()


def check_store(settings: Settings) -> None:
    """The job store (and a Redis broker of its own), when one is configured; nothing for the embedded one."""
    if settings.redis_url is not None:
        ping(check_url(settings.redis_url))
    broker = settings.broker_url
    if broker is not None and broker != settings.redis_url and is_redis_url(broker):
        ping(check_url(broker, BROKER_SETTING), BROKER_SETTING)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def describe(exc: BaseException, target: RedisTarget) -> tuple[str, bool]:  # noqa: PLR0911 - one case a line
    """What went wrong, in words, and whether it is the configuration's fault (vs. the server's absence)."""
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain)
    verify = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is not None:
        ca = target.tls.ca_certs if target.tls and target.tls.ca_certs else "the system trust store"
        reason = verify.verify_message or str(verify)
        what = (f"TLS certificate verification failed ({reason}): the server's certificate is not signed by a CA "
                f"in {ca}, or does not name {target.host}; set ssl_ca_certs= to the CA that signed it")  # fmt: skip
        return what, True
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        if "without any password configured" in text:
            return "the server has no password set: configure requirepass (or an ACL user) on it", True
        if target.password is None:
            return "the server requires a password: redis://:PASSWORD@… (or USER:PASSWORD@)", True
        return "wrong password (or user): the server refused to authenticate", True
    if any(isinstance(e, ssl.SSLError) for e in chain):
        reason = next(str(e) for e in chain if isinstance(e, ssl.SSLError))
        return f"TLS handshake failed ({reason}): is {target.where} a TLS port?", True
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return f"connection refused: nothing listens on {target.where}", False
    if any(isinstance(e, FileNotFoundError) for e in chain):
        return f"no such socket: {target.where} (is the server running?)", False
    if isinstance(exc, redis.TimeoutError) or any(isinstance(e, TimeoutError) for e in chain):
        step = "the TLS handshake" if "handshake" in text else "the server"
        hint = " (is it a TLS port? plain ports do not answer a handshake)" if "handshake" in text else ""
        return f"timed out after {TIMEOUT_S:.0f} s waiting for {step}{hint}", False
    if any(isinstance(e, ConnectionResetError) for e in chain) or "Connection closed" in text:
        hint = " (a TLS port? then use rediss://)" if target.tls is None else ""
        return f"the server closed the connection{hint}", True
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__, False


def check_api_tls(settings: Settings) -> None:
    """The API's certificate and key load together (as uvicorn will load them), or a clear UserError."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise UserError("HTTPS needs both a certificate and its key: --tls-cert FILE --tls-key FILE "
                        "(CELLBLOCK_TLS_CERT_FILE, CELLBLOCK_TLS_KEY_FILE)", field="tls")  # fmt: skip
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        _readable(option, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, ValueError, TypeError) as exc:
        why = "does not match the certificate" if "KEY_VALUES_MISMATCH" in str(exc) else "cannot be used"
        if isinstance(exc, TypeError) or "bad decrypt" in str(exc):
            why = "is encrypted with a passphrase; give an unencrypted key (mode 0600)"
        raise UserError(f"--tls-key {key} {why} (--tls-cert {cert}): {exc}", field="tls") from exc


def _readable(option: str, path: Path) -> None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise UserError(f"{option} {path}: {exc.strerror}", field="tls") from exc


def _no_password() -> str:
    raise TypeError("the key is encrypted")  # load_cert_chain would otherwise prompt on the terminal
