"""API keys, scopes, rates and quota bookkeeping (`cellblock.auth`, `cellblock.quotas`, `cellblock.api.auth`):
the pure parts. The Redis side (Lua scripts, atomicity) is tested against a real API in tests/service."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from cellblock.api.auth import as_api_error
from cellblock.auth import (
    ApiKey,
    Denied,
    KeyRequest,
    build_key,
    check_key,
    check_scope,
    hash_key,
    hash_matches,
    key_id_of,
    new_key,
    parse_rate,
)
from cellblock.config import Settings, is_loopback
from cellblock.quotas import RESERVE_GRACE_S, seconds_to_midnight, stale_jobs

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CELLBLOCK_"):
            monkeypatch.delenv(key)


def stored(request: KeyRequest, **fields: str) -> tuple[dict[str, str], str]:
    """The Redis hash of a new key (plus extra fields) and the key itself."""
    _, key, data = build_key(request, NOW)
    return {**data, **fields}, key


READER = KeyRequest(name="reader", scopes=["read"])


@pytest.mark.parametrize(
    ("text", "count", "period_s", "shown"),
    [("20/s", 20, 1, "20/s"), ("20", 20, 1, "20/s"), ("600/min", 600, 60, "600/min"), ("5/minute", 5, 60, "5/min"),
     ("1000/h", 1000, 3600, "1000/h"), (" 7 / day ", 7, 86400, "7/day")],
)  # fmt: skip
def test_parse_rate(text: str, count: int, period_s: int, shown: str) -> None:
    rate = parse_rate(text)
    assert (rate.count, rate.period_s, str(rate)) == (count, period_s, shown)
    assert rate.per_s == pytest.approx(count / period_s)


@pytest.mark.parametrize("text", ["", "0/s", "-1/s", "x/s", "20/fortnight", "2.5/s", "/s"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected N/s"):
        parse_rate(text)


def test_keys_are_random_and_carry_their_id() -> None:
    (id1, key1), (id2, key2) = new_key(), new_key()
    assert id1 != id2 and key1 != key2
    assert key_id_of(key1) == id1 and key1.startswith(f"cb_{id1}_")
    assert len(key1.split("_", 2)[2]) >= 43  # 32 random bytes, url-safe base64
    for malformed in (
        "",
        "cb_",
        "Bearer " + key1,
        key1[:-30],
        key1.replace("cb_", "xx_"),
        "cb_ABCDEF0123456789_" + "x" * 43,
    ):
        assert key_id_of(malformed) is None, malformed


def test_only_the_hash_is_stored() -> None:
    fields, key = stored(READER)
    secret = key.split("_", 2)[2]
    assert set(fields) == {"record", "hash"}
    assert secret not in fields["record"] and secret not in fields["hash"] and key not in str(fields)
    assert fields["hash"] == hash_key(key) and fields["hash"].startswith("sha256:")
    assert hash_matches(fields["hash"], key)
    assert not hash_matches(fields["hash"], key[:-1] + ("A" if key[-1] != "A" else "B"))


def test_check_key_accepts_the_right_key() -> None:
    fields, key = stored(READER)
    checked = check_key(fields, key, NOW)
    assert checked.id == key_id_of(key) and checked.name == "reader" and checked.scopes == ["read"]


@pytest.mark.parametrize("presented", [None, ""])
def test_check_key_without_a_key(presented: str | None) -> None:
    fields, _ = stored(READER)
    with pytest.raises(Denied) as caught:
        check_key(fields, presented, NOW)
    assert (caught.value.status, caught.value.code) == (401, "unauthenticated")


def test_check_key_with_a_wrong_or_unknown_key() -> None:
    fields, key = stored(READER)
    _, other = new_key()
    forged = key[: key.rindex("_") + 1] + other.split("_", 2)[2]  # the real id, another secret
    for presented, data in ((forged, fields), (other, fields), (key, {})):
        with pytest.raises(Denied) as caught:
            check_key(data, presented, NOW)
        assert (caught.value.status, caught.value.code) == (401, "invalid_key")


def test_check_key_revoked_and_expired() -> None:
    fields, key = stored(READER, revoked_at=NOW.isoformat())
    with pytest.raises(Denied) as caught:
        check_key(fields, key, NOW)
    assert (caught.value.status, caught.value.code) == (401, "key_revoked")
    fields, key = stored(KeyRequest(name="short", scopes=["read"], expires_in_days=1))
    assert check_key(fields, key, NOW + timedelta(hours=23, minutes=59)).expires_at == NOW + timedelta(days=1)
    with pytest.raises(Denied) as caught:
        check_key(fields, key, NOW + timedelta(days=1))
    assert (caught.value.status, caught.value.code) == (401, "key_expired")


def test_a_revoked_key_with_a_wrong_secret_is_just_invalid() -> None:
    fields, key = stored(READER, revoked_at=NOW.isoformat())
    with pytest.raises(Denied) as caught:
        check_key(fields, key[:-2] + "zz", NOW)
    assert caught.value.code == "invalid_key"  # revocation is only told to whoever holds the key


def key_with(*scopes: str) -> ApiKey:
    return ApiKey(id="0" * 16, name="k", scopes=list(scopes), created_at=NOW)  # type: ignore[arg-type]


def test_scopes() -> None:
    check_scope(key_with("read"), "read")
    check_scope(key_with("submit"), "submit")
    for scope in ("read", "submit", "admin"):
        check_scope(key_with("admin"), scope)  # type: ignore[arg-type]
    for key, scope in ((key_with("read"), "submit"), (key_with("submit"), "read"), (key_with("read", "submit"),
                                                                                   "admin")):  # fmt: skip
        with pytest.raises(Denied) as caught:
            check_scope(key, scope)  # type: ignore[arg-type]
        assert (caught.value.status, caught.value.code) == (403, "insufficient_scope")
        assert scope in caught.value.message


def test_key_request_normalizes_and_refuses() -> None:
    request = KeyRequest(name="n", scopes=["read", "admin", "read"], rate="600/minute")  # type: ignore[list-item]
    assert request.scopes == ["read", "admin"] and request.rate == "600/min"
    bad = [{"scopes": ["write"]}, {"scopes": []}, {"rate": "fast"}, {"max_running": 0}, {"daily_jobs": -1},
           {"expires_in_days": 0}, {"name": ""}, {"name": "a\nb"}, {"owner": "x"}]  # fmt: skip
    for fields in bad:
        with pytest.raises(ValidationError):
            KeyRequest.model_validate({"name": "n", "scopes": ["read"], **fields})


def test_stale_jobs() -> None:
    now = 1_000_000.0
    members = [("done", now), ("queued", now), ("gone", now), ("creating", now - 5),
               ("lost", now - RESERVE_GRACE_S - 1), ("cancelled", now), ("failed", now),
               ("running", now - 3600)]  # fmt: skip
    rows = [("done", "{}", "k"), ("queued", "{}", "k"), (None, None, None), (None, None, "k"), (None, None, "k"),
            ("cancelled", "{}", "k"), ("failed", "{}", "k"), ("running", "{}", "k")]  # fmt: skip
    assert stale_jobs(members, rows, now) == ["done", "gone", "lost", "cancelled", "failed"]


def test_seconds_to_midnight() -> None:
    assert seconds_to_midnight(NOW) == 12 * 3600
    assert seconds_to_midnight(datetime(2026, 3, 1, 23, 59, 59, 500000, tzinfo=UTC)) == 1
    assert seconds_to_midnight(datetime(2026, 3, 1, 0, 0, tzinfo=UTC)) == 86400


def test_denied_becomes_the_api_error_shape() -> None:
    missing = as_api_error(Denied(401, "unauthenticated", "no key"))
    assert (missing.status, missing.code) == (401, "unauthenticated")
    assert missing.headers == {"WWW-Authenticate": 'Bearer realm="cellblock"'}
    invalid = as_api_error(Denied(401, "invalid_key", "bad"))
    assert invalid.headers is not None and 'error="invalid_token"' in invalid.headers["WWW-Authenticate"]
    limited = as_api_error(Denied(429, "rate_limited", "slow down", retry_after_s=3))
    assert limited.headers == {"Retry-After": "3"}
    assert as_api_error(Denied(403, "insufficient_scope", "no")).headers is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("192.168.0.10", False), ("example.com", False),
     ("", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_auth_defaults_to_keys_off_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().auth == "auto" and Settings().auth_required() is False  # default: 127.0.0.1, no keys
    assert Settings(api_host="0.0.0.0").auth_required() is True
    assert Settings(api_host="::1").auth_required() is False
    assert Settings(auth="required").auth_required() is True
    assert Settings(auth="off", api_host="0.0.0.0").auth_required() is False
    monkeypatch.setenv("CELLBLOCK_AUTH", "required")
    assert Settings().auth_required() is True
    monkeypatch.setenv("CELLBLOCK_AUTH", "sometimes")
    with pytest.raises(ValidationError):
        Settings()
