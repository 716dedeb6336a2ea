"""API keys: creation, hashed storage, verification, scopes, request rate and job quotas — all in Redis.

Theory of operation.

* A key reads ``cb_<id>_<secret>``. The id (16 hex) is public: it names the key in `cellblock keys list`, in
  Redis and in the job hash of every job the key submits. The secret is 32 random bytes from `secrets`. The
  whole key is shown once, when it is created; Redis keeps only its SHA-256. A slow password hash would buy
  nothing: with 256 bits of entropy the secret cannot be guessed from its hash, and a fast hash keeps the
  check cheap on every request.
* Verifying a presented key: parse the id, read ``cb:apikey:{id}``, compare the hashes in constant time, then
  refuse a revoked or expired key. Nothing is cached, so a revocation holds from the next request on, on
  every API replica.
* Scopes: ``read`` (GET jobs, events, batches, languages, workers), ``submit`` (POST jobs and batches, DELETE
  jobs), ``admin`` (manage keys over HTTP; implies the other two).
* Rate ("N/s", "N/min", "N/h", "N/day"): a token bucket per key — capacity N, refilled at N per period — in
  Redis, spent by one Lua script, so every API replica shares it and two requests never spend one token.
* Quotas, on submissions: at most ``max_running`` jobs queued or running, at most ``daily_jobs`` jobs per
  UTC day. One Lua script checks both and records the jobs (all of a batch, or none), so concurrent
  submissions cannot overshoot. The worker's `finish()` takes a finished job out of the key's running set;
  a job that ends without a worker (cancelled while queued, expired unrun) is pruned when the set looks full.

Everything here refuses with `Denied` (status, code, message, Retry-After); the API turns it into its error
shape. The key names are in `cellblock.state`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cellblock.state import (
    API_KEYS,
    api_key_day_key,
    api_key_key,
    api_key_running_key,
)

Scope = Literal["submit", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("submit", "read", "admin")
KEY_FORMAT = re.compile(r"^cb_([0-9a-f]{16})_([A-Za-z0-9_-]{32,128})$")
PERIODS_S = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
             "d": 86400, "day": 86400}  # fmt: skip


class Denied(Exception):
    """A request refused by authentication (401), scope (403), or rate and quota (429)."""

    def __init__(self, status: int, code: str, message: str, *, retry_after_s: int | None = None,
                 field: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Rate:
    """N requests per period: a bucket of N tokens refilled at N per period."""

    count: int
    period_s: int

    @property
    def per_s(self) -> float:
        return self.count / self.period_s

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h", 86400: "day"}[self.period_s]
        return f"{self.count}/{unit}"


def parse_rate(text: str) -> Rate:
    """'20/s', '600/min', '1000/h', '50000/day' (a bare number is per second)."""
    count_text, _, unit = text.strip().partition("/")
    unit = unit.strip().lower() or "s"
    if not count_text.strip().isdigit() or int(count_text) < 1 or unit not in PERIODS_S:
        raise ValueError(f"rate {text!r}: expected N/s, N/min, N/h or N/day with N ≥ 1 (e.g. 20/s)")
    return Rate(int(count_text), PERIODS_S[unit])


class KeyRequest(BaseModel):
    """What a new key may do: its scopes and limits (`cellblock keys create`, ``POST /v1/keys``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$",
                      description="Who holds the key; shown in listings.", examples=["grader-prod"])  # fmt: skip
    scopes: list[Scope] = Field(min_length=1, description="read, submit, admin (admin implies the others).",
                                examples=[["submit", "read"]])  # fmt: skip
    rate: str | None = Field(None, description="Request rate over every route, e.g. 20/s or 600/min; none if "
                             "absent.", examples=["20/s"])  # fmt: skip
    max_running: int | None = Field(None, ge=1, description="Most jobs of this key queued or running at once.",
                                    examples=[50])  # fmt: skip
    daily_jobs: int | None = Field(None, ge=1, description="Most jobs this key may submit per UTC day.",
                                   examples=[100000])  # fmt: skip
    expires_in_days: float | None = Field(None, gt=0, le=36500, description="Lifetime; none if absent.",
                                          examples=[90])  # fmt: skip

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        return None if value is None else str(parse_rate(value))

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[Scope]) -> list[Scope]:
        return [s for s in SCOPES if s in value]  # de-duplicated, in a fixed order


class ApiKey(BaseModel):
    """A stored key: never the key itself nor its hash."""

    id: str = Field(description="The public part of the key (16 hex).", examples=["3f9c0e1d2b4a5968"])
    name: str = Field(description="Who holds the key.", examples=["grader-prod"])
    scopes: list[Scope] = Field(description="read, submit, admin (admin implies the others).",
                                examples=[["submit", "read"]])  # fmt: skip
    rate: str | None = Field(None, description="Request rate over every route; null: none.", examples=["20/s"])
    max_running: int | None = Field(None, description="Most jobs queued or running at once; null: none.",
                                    examples=[50])  # fmt: skip
    daily_jobs: int | None = Field(None, description="Most jobs per UTC day; null: none.", examples=[100000])
    created_at: datetime = Field(description="When the key was made.", examples=["2026-03-01T12:00:00Z"])
    expires_at: datetime | None = Field(None, description="When it stops working; null: never.",
                                        examples=["2026-06-01T12:00:00Z"])  # fmt: skip
    revoked_at: datetime | None = Field(None, description="When it was revoked; null: it was not.",
                                        examples=[None])  # fmt: skip
    last_used_at: datetime | None = Field(None, description="Its last authenticated request.",
                                          examples=["2026-03-02T08:30:00Z"])  # fmt: skip

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def status_at(self, now: datetime) -> Literal["active", "revoked", "expired"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


class KeyUsage(ApiKey):
    """A key as listed: its record, its status and what it uses now."""

    status: Literal["active", "revoked", "expired"] = Field(description="Whether the key works now.",
                                                            examples=["active"])  # fmt: skip
    running: int = Field(description="Jobs of this key queued or running (tracked when max_running is set).",
                         examples=[3])  # fmt: skip
    jobs_today: int = Field(description="Jobs this key submitted today (UTC).", examples=[1200])


class CreatedKey(ApiKey):
    key: str = Field(description="The key. Shown this once: only its hash is stored.",
                     examples=["cb_3f9c0e1d2b4a5968_Jd2kq9...43 characters"])  # fmt: skip


def new_key() -> tuple[str, str]:
    """(id, key) of a fresh random key."""
    key_id = secrets.token_hex(8)
    return key_id, f"cb_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(presented: str) -> str | None:
    match = KEY_FORMAT.match(presented.strip())
    return match.group(1) if match else None


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.strip().encode()).hexdigest()


def hash_matches(stored: str, presented: str) -> bool:
    return hmac.compare_digest(stored.encode(), hash_key(presented).encode())


def build_key(request: KeyRequest, now: datetime) -> tuple[ApiKey, str, dict[str, str]]:
    """The record, the key (to show once) and the Redis hash fields of a new key."""
    key_id, key = new_key()
    expires = now + timedelta(days=request.expires_in_days) if request.expires_in_days else None
    record = ApiKey(id=key_id, name=request.name, scopes=request.scopes, rate=request.rate,
                    max_running=request.max_running, daily_jobs=request.daily_jobs, created_at=now,
                    expires_at=expires)  # fmt: skip
    return record, key, {"record": record.model_dump_json(), "hash": hash_key(key)}


def key_from_fields(fields: dict[str, str]) -> ApiKey:
    key = ApiKey.model_validate_json(fields["record"])
    if fields.get("revoked_at"):
        key.revoked_at = datetime.fromisoformat(fields["revoked_at"])
    if fields.get("last_used_at"):
        key.last_used_at = datetime.fromisoformat(fields["last_used_at"])
    return key


def check_key(fields: dict[str, str], presented: str | None, now: datetime) -> ApiKey:
    """The key record if `presented` matches it and is neither revoked nor expired; else `Denied` (401)."""
    if not presented:
        raise Denied(401, "unauthenticated", "an API key is required: send 'Authorization: Bearer <key>' "
                     "or 'X-Auth-Token: <key>'")  # fmt: skip
    if "record" not in fields or not hash_matches(fields.get("hash", ""), presented):
        raise Denied(401, "invalid_key", "the API key is not valid")
    key = key_from_fields(fields)
    status = key.status_at(now)
    if status == "revoked":
        raise Denied(401, "key_revoked", f"this API key ({key.id}) was revoked")
    if status == "expired":
        raise Denied(401, "key_expired", f"this API key ({key.id}) expired at {key.expires_at:%Y-%m-%d %H:%M} UTC")
    return key


def check_scope(key: ApiKey, scope: Scope) -> None:
    if not key.allows(scope):
        granted = ", ".join(key.scopes)
        raise Denied(403, "insufficient_scope", f"this API key may not {scope} (its scopes: {granted})")


def day_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%d")


class AsyncKeys:
    """The API's side (redis.asyncio): verify a presented key; create, list and revoke keys."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def authenticate(self, presented: str | None) -> ApiKey:
        key_id = key_id_of(presented) if presented else None
        fields = {str(k): str(v) for k, v in (await self.redis.hgetall(api_key_key(key_id))).items()} if key_id else {}
        return check_key(fields, presented, datetime.now(UTC))

    async def create(self, request: KeyRequest) -> CreatedKey:
        record, key, fields = build_key(request, datetime.now(UTC))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(api_key_key(record.id), mapping=fields)
            pipe.sadd(API_KEYS, record.id)
            await pipe.execute()
        return CreatedKey(**record.model_dump(), key=key)

    async def list_keys(self) -> list[KeyUsage]:
        ids = sorted(str(i) for i in await self.redis.smembers(API_KEYS))
        today = day_of(datetime.now(UTC))
        async with self.redis.pipeline(transaction=False) as pipe:
            for key_id in ids:
                _queue_usage(pipe, key_id, today)
            replies = await pipe.execute()
        return _usages(ids, replies)

    async def revoke(self, key_id: str) -> ApiKey | None:
        if not re.fullmatch(r"[0-9a-f]{16}", key_id) or not await self.redis.hexists(api_key_key(key_id), "record"):
            return None
        await self.redis.hsetnx(api_key_key(key_id), "revoked_at", datetime.now(UTC).isoformat())
        fields = {str(k): str(v) for k, v in (await self.redis.hgetall(api_key_key(key_id))).items()}
        return key_from_fields(fields)


def _queue_usage(pipe: Any, key_id: str, day: str) -> None:
    pipe.hgetall(api_key_key(key_id))
    pipe.zcard(api_key_running_key(key_id))
    pipe.get(api_key_day_key(key_id, day))


def _usages(ids: Sequence[str], replies: Sequence[Any]) -> list[KeyUsage]:
    now, out = datetime.now(UTC), []
    for i in range(len(ids)):
        fields, running, today = replies[3 * i : 3 * i + 3]
        fields = {_text(k): _text(v) for k, v in fields.items()}
        if "record" not in fields:
            continue
        key = key_from_fields(fields)
        out.append(KeyUsage(**key.model_dump(), status=key.status_at(now), running=int(running),
                            jobs_today=int(_text(today) or 0)))  # fmt: skip
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


class Keys:
    """The command line's side (blocking redis-py): create, list, revoke, and whether any key is usable."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def create(self, request: KeyRequest) -> CreatedKey:
        record, key, fields = build_key(request, datetime.now(UTC))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(api_key_key(record.id), mapping=fields)
            pipe.sadd(API_KEYS, record.id)
            pipe.execute()
        return CreatedKey(**record.model_dump(), key=key)

    def list_keys(self) -> list[KeyUsage]:
        ids = sorted(_text(i) for i in self.redis.smembers(API_KEYS))
        today = day_of(datetime.now(UTC))
        with self.redis.pipeline(transaction=False) as pipe:
            for key_id in ids:
                _queue_usage(pipe, key_id, today)
            replies = pipe.execute()
        return _usages(ids, replies)

    def revoke(self, key_id: str) -> ApiKey | None:
        if not re.fullmatch(r"[0-9a-f]{16}", key_id) or not self.redis.hexists(api_key_key(key_id), "record"):
            return None
        self.redis.hsetnx(api_key_key(key_id), "revoked_at", datetime.now(UTC).isoformat())
        fields = {_text(k): _text(v) for k, v in self.redis.hgetall(api_key_key(key_id)).items()}
        return key_from_fields(fields)

    def usable(self) -> int:
        """Keys neither revoked nor expired: a server that requires keys refuses to start with none."""
        return sum(1 for key in self.list_keys() if key.status == "active")
