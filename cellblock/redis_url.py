"""Redis URLs: one form for every Redis client in Cellblock — redis-py (sync and asyncio) and Celery's kombu.

The form::

    redis://[USER]:PASSWORD@HOST[:PORT][/DB]                          plain TCP (a password is required: preflight)
    rediss://[USER]:PASSWORD@HOST[:PORT][/DB]?ssl_ca_certs=/etc/cellblock/ca.pem
             [&ssl_certfile=client.pem&ssl_keyfile=client.key]        TLS, certificate verified (client cert optional)
    unix:///path/redis.sock[?db=N]   (also redis+socket://, Celery's spelling)   the embedded server's socket

Theory of operation. redis-py and kombu read the same URL differently: redis-py hands every unknown query
option to its connection as a string, while kombu turns ``ssl_*`` options into its ``ssl`` dict but, for a
``rediss://`` URL with none of them, falls back to ``CERT_NONE`` — no verification — with only a log
warning. So the URL is parsed once here into a `RedisTarget`, anything that would weaken verification is
refused (``ssl_cert_reqs`` other than ``required``), and each library gets explicit arguments: redis-py
keyword arguments (`RedisTarget.redis_kwargs`), kombu a URL without ssl options plus ``broker_use_ssl``
(`kombu_url`, `kombu_ssl`). A ``rediss://`` URL without ``ssl_ca_certs`` verifies against the system trust
store; the server's name is checked against its certificate unless ``ssl_check_hostname=false``.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from cellblock.errors import UserError

DEFAULT_PORT = 6379
JOB_STORE_SETTING = "CELLBLOCK_REDIS_URL / --redis"
BROKER_SETTING = "CELLBLOCK_BROKER_URL / --broker"
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
QUERY_OPTIONS = ("db", *TLS_OPTIONS)
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


@dataclass(frozen=True)
class TlsOptions:
    """What a TLS client needs: the CA (None: the system trust store) and, optionally, a client certificate."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool = True

    def files(self) -> list[tuple[str, str]]:
        """(query option, path) of every file named, for the preflight's readability check."""
        named = (("ssl_ca_certs", self.ca_certs), ("ssl_certfile", self.certfile), ("ssl_keyfile", self.keyfile))
        return [(option, path) for option, path in named if path]


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL. ``host``/``port`` for TCP, ``path`` for a unix socket; ``tls`` only for rediss://."""

    url: str
    scheme: Literal["redis", "rediss", "unix"]
    db: int = 0
    host: str | None = None
    port: int = DEFAULT_PORT
    path: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None

    @property
    def is_tcp(self) -> bool:
        return self.scheme != "unix"

    @property
    def where(self) -> str:
        if self.path is not None:
            return self.path
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"

    def redis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `redis.Redis(...)` and `redis.asyncio.Redis(...)` (add timeouts etc. yourself)."""
        kwargs: dict[str, Any] = {"db": self.db, "username": self.username, "password": self.password}
        if self.path is not None:
            return {**kwargs, "unix_socket_path": self.path}
        kwargs.update(host=self.host, port=self.port)
        if self.tls is not None:
            kwargs.update(ssl=True, ssl_cert_reqs="required", ssl_ca_certs=self.tls.ca_certs,
                          ssl_certfile=self.tls.certfile, ssl_keyfile=self.tls.keyfile,
                          ssl_check_hostname=self.tls.check_hostname)  # fmt: skip
        return kwargs

    def kombu_url(self) -> str:
        """The broker URL for Celery: the same server, without query options (TLS goes in `kombu_ssl`)."""
        netloc = urlsplit(self.url).netloc  # keeps the user's percent-encoding of user and password
        if self.path is not None:  # kombu reads the socket's database from virtual_host
            return f"redis+socket://{netloc}{self.path}" + (f"?virtual_host={self.db}" if self.db else "")
        return f"{self.scheme}://{netloc}/{self.db}"

    def kombu_ssl(self) -> dict[str, Any] | None:
        """Celery's ``broker_use_ssl`` for this server: kombu passes it to redis-py's SSLConnection."""
        if self.tls is None:
            return None
        options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": self.tls.check_hostname}
        for option, path in self.tls.files():
            options[option] = path
        return options


def is_redis_url(url: str) -> bool:
    """Whether a URL names a Redis server (as opposed to, say, amqp:// for RabbitMQ)."""
    return url.lower().startswith(("redis://", "rediss://", "unix://", "redis+socket://"))


def redacted(url: str) -> str:
    """The URL with its password (and user) replaced by ***, for messages and logs."""
    return re.sub(r"//[^@/]*@", "//***@", url)


def parse_redis_url(url: str, setting: str = JOB_STORE_SETTING) -> RedisTarget:
    """Parse a Redis URL, or raise `UserError` naming ``setting`` and what is wrong with it."""

    def bad(why: str) -> UserError:
        return UserError(f"{setting}: {redacted(url)}: {why}", field="redis")

    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise bad(f"not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix", "redis+socket"):
        raise bad("the scheme must be redis://, rediss:// (TLS) or unix:// (a socket path)")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(QUERY_OPTIONS))
    if unknown:
        raise bad(f"unknown option {unknown[0]!r}; the options are {', '.join(QUERY_OPTIONS)}")
    tls_given = sorted(set(query) & set(TLS_OPTIONS))
    if tls_given and scheme != "rediss":
        raise bad(f"{tls_given[0]} is a TLS option: use a rediss:// URL")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if scheme in ("unix", "redis+socket"):
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise bad("a unix socket URL needs an absolute path: unix:///path/to/redis.sock")
        return RedisTarget(url, "unix", db=_db(query.get("db", "0"), bad), path=path, username=user, password=password)
    if not parts.hostname:
        raise bad("no host: redis://:PASSWORD@HOST:PORT/0")
    db = query.get("db") or parts.path.strip("/") or "0"
    tls = _tls_options(query, bad) if scheme == "rediss" else None
    return RedisTarget(url, "rediss" if scheme == "rediss" else "redis", db=_db(db, bad), host=parts.hostname,
                       port=port or DEFAULT_PORT, tls=tls, username=user, password=password)  # fmt: skip


def _db(value: str, bad: Any) -> int:
    if not value.isdigit():
        raise bad(f"the database must be a number, not {value!r}")
    return int(value)


def _tls_options(query: dict[str, str], bad: Any) -> TlsOptions:
    reqs = query.get("ssl_cert_reqs", "required")
    if reqs.lower() not in ("required", "cert_required"):
        raise bad(f"ssl_cert_reqs={reqs} would not verify the server's certificate; Cellblock always verifies it: "
                  "name the CA that signed it with ssl_ca_certs=/path/ca.pem instead")  # fmt: skip
    check = query.get("ssl_check_hostname", "true").lower()
    if check not in _TRUE + _FALSE:
        raise bad(f"ssl_check_hostname must be true or false, not {check!r}")
    certfile, keyfile = query.get("ssl_certfile") or None, query.get("ssl_keyfile") or None
    if keyfile and not certfile:
        raise bad("ssl_keyfile without ssl_certfile: give the client certificate too")
    return TlsOptions(ca_certs=query.get("ssl_ca_certs") or None, certfile=certfile, keyfile=keyfile,
                      check_hostname=check in _TRUE)  # fmt: skip


def redis_kwargs(url: str, setting: str = JOB_STORE_SETTING) -> dict[str, Any]:
    """`parse_redis_url(url).redis_kwargs()`: what every Redis client in Cellblock is built from."""
    return parse_redis_url(url, setting).redis_kwargs()


def kombu_broker(url: str) -> tuple[str, dict[str, Any] | None]:
    """Celery's broker URL and ``broker_use_ssl`` for ``url``; a non-Redis URL (amqp://) is returned as it is."""
    if not is_redis_url(url):
        return url, None
    target = parse_redis_url(url, "CELLBLOCK_BROKER_URL / --broker")
    return target.kombu_url(), target.kombu_ssl()
