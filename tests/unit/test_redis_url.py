"""One Redis URL form for redis-py and kombu (cellblock/redis_url.py): parsing, TLS options, refusals. Pure."""

from __future__ import annotations

import ssl

import pytest
import redis
from kombu.utils.url import parse_url as kombu_parse_url

from cellblock.errors import UserError
from cellblock.redis_url import kombu_broker, parse_redis_url, redacted, redis_kwargs

CA = "/etc/cellblock/ca.pem"


def test_plain_tcp_url() -> None:
    target = parse_redis_url("redis://:s3cret@10.0.0.5:6380/2")
    assert (target.scheme, target.host, target.port, target.db, target.password) == (
        "redis",
        "10.0.0.5",
        6380,
        2,
        "s3cret",
    )
    assert target.is_tcp and target.tls is None
    kwargs = target.redis_kwargs()
    assert kwargs == {"host": "10.0.0.5", "port": 6380, "db": 2, "username": None, "password": "s3cret"}
    assert "ssl" not in kwargs


def test_defaults_port_and_db() -> None:
    target = parse_redis_url("redis://:pw@cache.internal")
    assert (target.port, target.db) == (6379, 0)


def test_acl_user_and_percent_encoded_password() -> None:
    target = parse_redis_url("redis://cellblock:p%40ss%2Fword@host:6379/0")
    assert (target.username, target.password) == ("cellblock", "p@ss/word")
    assert target.kombu_url() == "redis://cellblock:p%40ss%2Fword@host:6379/0"  # kombu unquotes it itself


def test_tls_url_to_redis_py_verifies_by_default() -> None:
    kwargs = redis_kwargs(f"rediss://:pw@redis.example:6380/0?ssl_ca_certs={CA}")
    assert kwargs["ssl"] is True
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_ca_certs"] == CA
    assert kwargs["ssl_check_hostname"] is True
    assert kwargs["ssl_certfile"] is None and kwargs["ssl_keyfile"] is None
    redis.Redis(**kwargs)  # redis-py accepts every argument (no connection is made here)


def test_tls_without_ca_uses_the_system_store_and_still_verifies() -> None:
    target = parse_redis_url("rediss://:pw@redis.example:6380/0")
    assert target.tls is not None and target.tls.ca_certs is None
    assert target.redis_kwargs()["ssl_cert_reqs"] == "required"
    assert target.kombu_ssl() == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}


def test_tls_client_certificate() -> None:
    url = f"rediss://u:pw@h:6380/1?ssl_ca_certs={CA}&ssl_certfile=/c.pem&ssl_keyfile=/c.key&ssl_check_hostname=false"
    target = parse_redis_url(url)
    assert target.redis_kwargs()["ssl_certfile"] == "/c.pem"
    assert target.redis_kwargs()["ssl_keyfile"] == "/c.key"
    assert target.redis_kwargs()["ssl_check_hostname"] is False
    assert target.tls is not None and [o for o, _ in target.tls.files()] == [
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
    ]


def test_kombu_gets_a_url_without_ssl_options_and_an_explicit_ssl_dict() -> None:
    broker, options = kombu_broker(f"rediss://:pw@h:6380/3?ssl_ca_certs={CA}&ssl_certfile=/c.pem&ssl_keyfile=/c.key")
    assert broker == "rediss://:pw@h:6380/3"
    assert options == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True, "ssl_ca_certs": CA,
                       "ssl_certfile": "/c.pem", "ssl_keyfile": "/c.key"}  # fmt: skip
    parsed = kombu_parse_url(broker)
    assert (parsed["transport"], parsed["hostname"], parsed["port"], parsed["password"]) == ("rediss", "h", 6380, "pw")
    assert parsed["virtual_host"] == "3" and "ssl" not in parsed


def test_kombu_plain_and_socket_urls() -> None:
    assert kombu_broker("redis://:pw@h:6379/0") == ("redis://:pw@h:6379/0", None)
    assert kombu_broker("redis+socket:///run/r/redis.sock") == ("redis+socket:///run/r/redis.sock", None)
    assert kombu_broker("unix:///run/r/redis.sock?db=4") == ("redis+socket:///run/r/redis.sock?virtual_host=4", None)
    assert kombu_broker("amqp://guest:guest@h:5672//") == ("amqp://guest:guest@h:5672//", None)


def test_unix_socket_url() -> None:
    target = parse_redis_url("unix:///var/lib/cellblock/redis/redis.sock")
    assert not target.is_tcp and target.password is None
    assert target.redis_kwargs() == {"unix_socket_path": "/var/lib/cellblock/redis/redis.sock", "db": 0,
                                     "username": None, "password": None}  # fmt: skip
    assert parse_redis_url("redis+socket:///tmp/r.sock").path == "/tmp/r.sock"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("rediss://:pw@h:6380/0?ssl_cert_reqs=none", "always verifies"),
        ("rediss://:pw@h:6380/0?ssl_cert_reqs=optional", "always verifies"),
        ("redis://:pw@h:6379/0?ssl_ca_certs=/ca.pem", "use a rediss:// URL"),
        ("rediss://:pw@h:6380/0?ssl_keyfile=/k.pem", "without ssl_certfile"),
        ("rediss://:pw@h:6380/0?ssl_check_hostname=maybe", "true or false"),
        ("redis://:pw@h:6379/0?socket_timeout=5", "unknown option 'socket_timeout'"),
        ("http://h:6379/0", "the scheme must be"),
        ("redis://:pw@/0", "no host"),
        ("redis://:pw@h:6379/zero", "must be a number"),
        ("redis://:pw@h:99999/0", "not a valid URL"),
        ("unix://relative.sock", "absolute path"),
    ],
)
def test_refused_urls_say_why_and_hide_the_password(url: str, words: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_redis_url(url)
    assert words in caught.value.message
    assert "CELLBLOCK_REDIS_URL" in caught.value.message
    assert ":pw@" not in caught.value.message
    assert caught.value.field == "redis"


def test_broker_errors_name_the_broker_setting() -> None:
    with pytest.raises(UserError, match="CELLBLOCK_BROKER_URL"):
        kombu_broker("rediss://:pw@h:6380/0?ssl_cert_reqs=none")


def test_redacted() -> None:
    assert redacted("rediss://user:pw@h:6380/0?ssl_ca_certs=/a") == "rediss://***@h:6380/0?ssl_ca_certs=/a"
    assert redacted("unix:///run/redis.sock") == "unix:///run/redis.sock"
