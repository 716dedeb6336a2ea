"""state.START_JOB_LUA against a real Redis: how a worker starts a job (worker._start), in one round trip.

A bundle's jobs are read when the bundle arrives, so a job may be cancelled (or finished by another delivery)
before its turn: the start must see that atomically, count only real starts as attempts, and take the job out
of its queue's backlog as it becomes running.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cellblock.models import JobState
from cellblock.state import START_JOB_LUA, TERMINAL_STATES, events_key, job_key, queued_key, running_key
from tests.service.conftest import RedisServer

QUEUE = "lang.python3"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[redis.Redis]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server.client()
    finally:
        server.stop()


def start(store: redis.Redis, job_id: str, max_attempts: int = 3) -> int:
    keys = [job_key(job_id), events_key(job_id), running_key("w1"), queued_key(QUEUE)]
    running = json.dumps({"state": "running", "worker": "w1"})
    return int(store.eval(START_JOB_LUA, 4, *keys, max_attempts, "2026-01-01T00:00:00+00:00", "w1", job_id, running))


def queued(store: redis.Redis, job_id: str, state: str = "queued", attempts: int = 0) -> None:
    store.hset(job_key(job_id), mapping={"id": job_id, "state": state, "attempts": attempts, "queue": QUEUE})
    store.sadd(queued_key(QUEUE), job_id)


def test_a_queued_job_becomes_running_in_one_step(store: redis.Redis) -> None:
    queued(store, "a")
    assert start(store, "a") == 1
    fields = store.hgetall(job_key("a"))
    assert (fields["state"], fields["worker"], fields["attempts"]) == ("running", "w1", "1")
    assert fields["started_at"] == "2026-01-01T00:00:00+00:00"
    assert store.smembers(running_key("w1")) == {"a"} and store.scard(queued_key(QUEUE)) == 0
    [(_, entry)] = store.xrange(events_key("a"))
    assert entry == {"type": "state", "data": json.dumps({"state": "running", "worker": "w1"})}
    assert start(store, "a") == 2  # delivered again while running (its worker died): another attempt


@pytest.mark.parametrize("state", sorted(s.value for s in TERMINAL_STATES))
def test_a_finished_or_cancelled_job_is_not_started_nor_counted(store: redis.Redis, state: str) -> None:
    queued(store, "b", state=state)
    store.srem(queued_key(QUEUE), "b")
    assert start(store, "b") == -2
    assert store.hgetall(job_key("b"))["state"] == state and store.hget(job_key("b"), "attempts") == "0"
    assert store.xlen(events_key("b")) == 0 and store.scard(running_key("w1")) == 0


def test_a_job_not_in_the_store_is_not_created(store: redis.Redis) -> None:
    assert start(store, "gone") == -1
    assert not store.exists(job_key("gone")) and store.xlen(events_key("gone")) == 0


def test_one_attempt_too_many_is_counted_but_not_started(store: redis.Redis) -> None:
    queued(store, "c", attempts=2)
    assert start(store, "c", max_attempts=2) == 3
    assert store.hget(job_key("c"), "state") == JobState.QUEUED.value and store.xlen(events_key("c")) == 0
    assert store.scard(running_key("w1")) == 0
