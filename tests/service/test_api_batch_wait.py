"""GET /v1/batches/{id}?wait=true: the long-poll that answers once every job of the batch has finished."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from cellblock.client import ApiError, AsyncClient, Client
from cellblock.state import BATCH_MEMBER_FINISHED_LUA
from tests.service.conftest import Service, assert_error

pytestmark = pytest.mark.sandbox

SLOW = "import time; time.sleep(1); print('slept')"
HALF = "import time; time.sleep(0.5)"


def job(source: str) -> dict[str, Any]:
    return {"language": "python3", "files": [{"name": "main.py", "content": source}]}


def submit(api: httpx.Client, *sources: str) -> dict[str, Any]:
    response = api.post("/v1/batches", json={"jobs": [job(s) for s in sources]})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def timed_get(api: httpx.Client, batch_id: str, **params: str) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = api.get(f"/v1/batches/{batch_id}", params=params)
    return time.monotonic() - started, response


def test_wait_answers_once_every_job_has_finished(api: httpx.Client, service: Service) -> None:
    batch = submit(api, "print('fast')", SLOW)
    elapsed, response = timed_get(api, batch["id"], wait="true")
    answered = datetime.now().astimezone()
    body = response.json()
    assert response.status_code == 200 and body["done"] is True, body
    assert elapsed > 0.9  # the slow job sleeps 1 s
    assert [j["id"] for j in body["jobs"]] == batch["jobs"] and body["states"] == {"done": 2}
    assert [j["tests"][0]["run"]["stdout"] for j in body["jobs"]] == ["fast\n", "slept\n"]
    assert all(datetime.fromisoformat(j["finished_at"]) <= answered for j in body["jobs"])
    # Each finished member decremented the batch's count (what the long-poll watches); the batch's retention
    # clock started with the last one.
    store = service.redis.client()
    assert store.hget(f"cb:batch:{batch['id']}", "remaining") == "0"
    assert store.ttl(f"cb:batch:{batch['id']}") > 0


def test_wait_s_bounds_the_wait_and_done_says_it_ran_out(api: httpx.Client) -> None:
    batch = submit(api, SLOW)
    elapsed, response = timed_get(api, batch["id"], wait="true", wait_s="0.3")
    body = response.json()
    assert response.status_code == 200 and body["done"] is False, body
    assert 0.25 < elapsed < 0.9
    assert body["jobs"][0]["state"] in ("queued", "running") and body["jobs"][0]["id"] == batch["jobs"][0]
    elapsed, response = timed_get(api, batch["id"], wait="true", wait_s="30")
    assert response.json()["done"] is True and elapsed < 5


def test_a_member_cancelled_while_queued_counts_as_finished(api: httpx.Client, service: Service) -> None:
    batch = submit(api, *[HALF] * 4)  # 2 slots: two of them wait in the queue
    states = {j["id"]: j["state"] for j in api.get(f"/v1/batches/{batch['id']}").json()["jobs"]}
    queued = next(job_id for job_id in batch["jobs"] if states[job_id] == "queued")
    assert api.delete(f"/v1/jobs/{queued}").status_code == 202
    elapsed, response = timed_get(api, batch["id"], wait="true", wait_s="20")
    body = response.json()
    assert body["done"] is True and body["states"] == {"done": 3, "cancelled": 1}, body
    assert elapsed > 0.4  # the second round of half-second jobs ran after the request came
    assert service.redis.client().hget(f"cb:batch:{batch['id']}", "remaining") == "0"  # the cancel counted too


def test_a_member_counts_once_however_often_it_finishes(service: Service) -> None:
    """A job can be finished twice (cancelled while queued as a worker takes it, or redelivered): the batch's
    `remaining` count moves once per member, and the batch's retention starts with its last member."""
    store = service.redis.client()
    key = f"cb:batch:count-once-{time.time_ns()}"
    store.hset(key, mapping={"remaining": 2})
    for _ in range(3):
        store.eval(BATCH_MEMBER_FINISHED_LUA, 1, key, 60, "job-a")
    assert store.hget(key, "remaining") == "1" and store.ttl(key) == -1
    store.eval(BATCH_MEMBER_FINISHED_LUA, 1, key, 60, "job-b")
    assert store.hget(key, "remaining") == "0" and 0 < store.ttl(key) <= 60
    store.delete(key)


def test_a_count_that_misleads_cannot_hold_the_answer(api: httpx.Client, service: Service) -> None:
    """The members' states decide: a batch from before `remaining` existed, or whose count is off (members
    finished by a worker that did not count them), or whose jobs expired, is answered as it is."""
    store = service.redis.client()
    batch = submit(api, HALF, "print(2)")
    store.hset(f"cb:batch:{batch['id']}", "remaining", 99)
    store.delete(f"cb:job:{batch['jobs'][1]}")  # expired (the worker skips it: never finished, never counted)
    elapsed, response = timed_get(api, batch["id"], wait="true", wait_s="20")
    body = response.json()
    assert body["done"] is True and [j["state"] for j in body["jobs"]] == ["done"], body
    assert elapsed < 4  # the half-second job, then at most one state scan (a second) and a loaded machine

    older = submit(api, "print(3)")
    store.hdel(f"cb:batch:{older['id']}", "remaining")
    elapsed, response = timed_get(api, older["id"], wait="true", wait_s="20")
    assert response.json()["done"] is True and elapsed < 4


def test_an_unknown_batch_is_404_at_once(api: httpx.Client) -> None:
    elapsed, response = timed_get(api, "0" * 32, wait="true")
    assert_error(response, 404, "id")
    assert elapsed < 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"wait": "maybe"}, "wait"),
        ({"wait": "true", "wait_s": "0"}, "wait_s"),
        ({"wait": "true", "wait_s": "-1"}, "wait_s"),
        ({"wait": "true", "wait_s": "60.5"}, "wait_s"),
        ({"wait": "true", "wait_s": "soon"}, "wait_s"),
        ({"wait": "true", "wait_s": "nan"}, "wait_s"),
        ({"wait_s": "5"}, "wait_s"),  # wait_s without wait=true
    ],
)
def test_bad_wait_values_are_refused_naming_the_field(api: httpx.Client, params: dict[str, str], field: str) -> None:
    batch = submit(api, HALF)
    elapsed, response = timed_get(api, batch["id"], **params)
    assert_error(response, 422, field)
    assert elapsed < 1


def counting(base_url: str, gets: list[str]) -> httpx.Client:
    return httpx.Client(base_url=base_url, event_hooks={"request": [lambda r: gets.append(str(r.url))]})


def test_sdk_waits_for_a_batch_with_the_long_poll(service: Service) -> None:
    gets: list[str] = []
    with Client(http=counting(service.base_url, gets)) as cb:
        submitted = cb.submit_batch([job("print('a')"), job(SLOW)])
        early = cb.get_batch(submitted.id, wait=True, wait_s=0.2)
        assert not early.done and early.total == 2
        with pytest.raises(ApiError) as caught:
            cb.wait_batch(submitted.id, timeout_s=0.2)
        assert caught.value.code == "timeout" and caught.value.status is None
        gets.clear()
        batch = cb.wait_batch(submitted.id, timeout_s=30)
    assert batch.done and batch.finished == 2 and [j.id for j in batch.jobs] == submitted.job_ids
    assert len(gets) == 1 and "wait=true" in gets[0]  # one long-poll, not a poll every 50 ms


def test_async_sdk_waits_for_a_batch_with_the_long_poll(service: Service) -> None:
    gets: list[str] = []

    async def record(request: httpx.Request) -> None:
        gets.append(str(request.url))

    async def scenario() -> None:
        http = httpx.AsyncClient(base_url=service.base_url, event_hooks={"request": [record]})
        async with AsyncClient(http=http) as client:
            submitted = await client.submit_batch([job(SLOW)])
            early = await client.get_batch(submitted.id, True, wait_s=0.2)
            assert not early.done
            with pytest.raises(ApiError) as caught:
                await client.wait_batch(submitted.id, timeout_s=0.2)
            assert caught.value.code == "timeout"
            gets.clear()
            seen: list[int] = []
            batch = await client.wait_batch(submitted.id, timeout_s=30, on_progress=lambda b: seen.append(b.finished))
            assert batch.done and batch.jobs[0].tests[0].run is not None
            assert batch.jobs[0].tests[0].run.stdout == "slept\n" and seen[-1] == 1
            assert 1 <= len(gets) <= 3 and all("wait=true" in g for g in gets)  # progress: one answer a second

    asyncio.run(scenario())
