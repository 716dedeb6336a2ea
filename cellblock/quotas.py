"""Request rate and job quotas of API keys, enforced atomically in Redis by Lua scripts.

Theory of operation.

* Rate ("N/s", "N/min", "N/h", "N/day"): a token bucket per key — capacity N, refilled at N per period — in
  ``cb:apikey:{id}:rate``. One script reads, refills and spends it with the Redis server's clock, so every
  API replica shares the bucket and two concurrent requests never spend the same token. Every request that
  passes authentication and its scope check spends one token (and stamps the key's last_used_at).
* Quotas, on submissions: at most ``max_running`` jobs queued or running, at most ``daily_jobs`` jobs per UTC
  day. One script checks both and then records every job of the request (all of a batch, or none): the day
  counter goes up, the job ids enter the key's running set (when max_running is set) and each job hash gets
  the key's id. A submission that fails after that hands its jobs back (`release`).
* A job leaves the running set when the worker's `finish()` stores its result. A job that ends without a
  worker — cancelled while queued, expired unrun, or lost with an API process between reserve and store —
  is pruned when the set looks full: before a refusal the set is checked against the job hashes once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cellblock.auth import ApiKey, Denied, day_of, parse_rate
from cellblock.state import (
    JOB_API_KEY_FIELD,
    TERMINAL_STATES,
    api_key_day_key,
    api_key_key,
    api_key_rate_key,
    api_key_running_key,
    job_key,
)

DAY_COUNTER_TTL_S = 2 * 86400
RESERVE_GRACE_S = 60  # a job reserved this long ago that never got stored was lost with its API process
TERMINAL = frozenset(state.value for state in TERMINAL_STATES)


def seconds_to_midnight(now: datetime) -> int:
    midnight = (now.astimezone(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - now).total_seconds()))


def stale_jobs(members: Sequence[tuple[str, float]], rows: Sequence[Sequence[str | None]], now_s: float) -> list[str]:
    """Jobs of a running set that hold no slot any more. `rows` are HMGET state, spec, api_key_id per job:
    a finished job, a job whose hash is gone, or one reserved long ago but never stored."""
    out = []
    for (job_id, reserved_at), (state, spec, owner) in zip(members, rows, strict=True):
        gone = state is None and spec is None and owner is None
        lost = spec is None and reserved_at < now_s - RESERVE_GRACE_S
        if gone or lost or state in TERMINAL:
            out.append(job_id)
    return out


# Lua, so that reading and updating a bucket or a quota is one atomic step on the Redis server.
SPEND_LUA = """
-- KEYS[1] token bucket, KEYS[2] key hash; ARGV[1] tokens per second ('' = no rate), ARGV[2] capacity, ARGV[3] now
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'last_used_at', ARGV[3]) end
if ARGV[1] == '' then return {1, '0'} end
local rate, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = math.min(cap, (tonumber(b[1]) or cap) + math.max(0, now - (tonumber(b[2]) or now)) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then tokens, allowed = tokens - 1, 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""
RESERVE_LUA = """
-- KEYS[1] running zset, KEYS[2] day counter, KEYS[3..] job hashes
-- ARGV[1] max running (-1: none), ARGV[2] daily jobs (-1: none), ARGV[3] key id, ARGV[4] counter TTL, ARGV[5..] ids
local n = #KEYS - 2
local maxr, daily = tonumber(ARGV[1]), tonumber(ARGV[2])
if maxr >= 0 then
  local running = redis.call('ZCARD', KEYS[1])
  if running + n > maxr then return {1, running} end
end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if daily >= 0 and used + n > daily then return {2, used} end
redis.call('INCRBY', KEYS[2], n)
redis.call('EXPIRE', KEYS[2], ARGV[4])
local now = redis.call('TIME')[1]
for i = 1, n do
  if maxr >= 0 then redis.call('ZADD', KEYS[1], now, ARGV[4 + i]) end
  redis.call('HSET', KEYS[2 + i], '@FIELD@', ARGV[3])
end
return {0, used + n}
""".replace("@FIELD@", JOB_API_KEY_FIELD)
RELEASE_LUA = """
-- KEYS[1] running zset, KEYS[2] day counter, KEYS[3..] job hashes; ARGV[1..] job ids
local n = #KEYS - 2
for i = 1, n do
  redis.call('ZREM', KEYS[1], ARGV[i])
  if redis.call('HEXISTS', KEYS[2 + i], 'spec') == 0 then redis.call('DEL', KEYS[2 + i]) end
end
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('DECRBY', KEYS[2], n) < 0 then
  redis.call('SET', KEYS[2], 0, 'KEEPTTL')
end
return n
"""


@dataclass(frozen=True)
class Reservation:
    """Jobs counted against a key's quotas; `AsyncKeys.release` gives them back (a submission that failed)."""

    key_id: str
    day: str
    job_ids: tuple[str, ...]


def _quota_keys(key_id: str, day: str, job_ids: Sequence[str]) -> list[str]:
    return [api_key_running_key(key_id), api_key_day_key(key_id, day), *(job_key(j) for j in job_ids)]


class Quotas:
    """The API's side (redis.asyncio): spend rate tokens, reserve and release jobs, prune finished ones."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._spend = redis.register_script(SPEND_LUA)
        self._reserve = redis.register_script(RESERVE_LUA)
        self._release = redis.register_script(RELEASE_LUA)

    async def spend(self, key: ApiKey) -> None:
        """One request: refresh last_used_at and take a token from the key's bucket (429 when empty)."""
        rate = parse_rate(key.rate) if key.rate else None
        args = [f"{rate.per_s!r}", str(rate.count)] if rate else ["", "0"]
        allowed, wait = await self._spend(keys=[api_key_rate_key(key.id), api_key_key(key.id)],
                                          args=[*args, datetime.now(UTC).isoformat()])  # fmt: skip
        if int(allowed) != 1:
            retry = max(1, math.ceil(float(wait)))
            raise Denied(429, "rate_limited", f"over this API key's rate of {key.rate} requests; retry in {retry} s",
                         retry_after_s=retry)  # fmt: skip

    async def reserve(self, key: ApiKey, job_ids: Sequence[str]) -> Reservation:
        """Count `job_ids` against the key's quotas, atomically, all or none (429 / 422 when over)."""
        _refuse_impossible(key, len(job_ids))
        now = datetime.now(UTC)
        reservation = Reservation(key.id, day_of(now), tuple(job_ids))
        outcome, used = await self._run_reserve(key, reservation)
        if outcome == 1 and await self.prune(key.id):  # jobs that ended without a worker were still counted
            outcome, used = await self._run_reserve(key, reservation)
        if outcome != 0:
            raise _over_quota(key, outcome, used, now)
        return reservation

    async def _run_reserve(self, key: ApiKey, r: Reservation) -> tuple[int, int]:
        args = [-1 if key.max_running is None else key.max_running, -1 if key.daily_jobs is None else key.daily_jobs,
                key.id, DAY_COUNTER_TTL_S, *r.job_ids]  # fmt: skip
        outcome, used = await self._reserve(keys=_quota_keys(key.id, r.day, r.job_ids), args=args)
        return int(outcome), int(used)

    async def release(self, reservation: Reservation) -> None:
        r = reservation
        await self._release(keys=_quota_keys(r.key_id, r.day, r.job_ids), args=list(r.job_ids))

    async def prune(self, key_id: str) -> int:
        """Drop jobs that hold no slot any more from the key's running set; how many were dropped."""
        name = api_key_running_key(key_id)
        members = [(str(m), float(s)) for m, s in await self.redis.zrange(name, 0, -1, withscores=True)]
        if not members:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, _ in members:
                pipe.hmget(job_key(job_id), "state", "spec", JOB_API_KEY_FIELD)
            pipe.time()
            *rows, (now_s, _) = await pipe.execute()
        stale = stale_jobs(members, rows, float(now_s))
        if stale:
            await self.redis.zrem(name, *stale)
        return len(stale)


def _refuse_impossible(key: ApiKey, count: int) -> None:
    """A batch larger than a quota could never be accepted: say so instead of "retry later"."""
    for limit, label in ((key.max_running, "max_running"), (key.daily_jobs, "daily_jobs")):
        if limit is not None and count > limit:
            raise Denied(422, "over_quota", f"{count} jobs in one request; this API key's {label} is {limit}",
                         field="jobs")  # fmt: skip


def _over_quota(key: ApiKey, outcome: int, used: int, now: datetime) -> Denied:
    if outcome == 1:
        return Denied(429, "max_running_exceeded", f"this API key has {used} jobs queued or running, its limit "
                      f"is {key.max_running}; retry when some finish", retry_after_s=1)  # fmt: skip
    return Denied(429, "daily_quota_exceeded", f"this API key submitted {used} of its {key.daily_jobs} jobs "
                  "today (UTC)", retry_after_s=seconds_to_midnight(now))  # fmt: skip
