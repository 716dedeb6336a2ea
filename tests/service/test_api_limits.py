"""The API's limits: backlog (503 + Retry-After), body cap (413), configured maxima, retention, idempotency.

Two services: `crowded` has no worker at all (accepted jobs stay queued) and small caps; `kept` has a worker
and the shortest retention (60 s): we check the expiry set on the keys rather than wait for it.
"""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service, assert_error, made_service

pytestmark = pytest.mark.sandbox

BACKLOG, BODY_KIB, RETENTION_S = 3, 8, 60


@pytest.fixture(scope="module")
def crowded() -> Iterator[Service]:
    with made_service(
        CELLBLOCK_MAX_BACKLOG=str(BACKLOG),
        CELLBLOCK_MAX_BODY_KIB=str(BODY_KIB),
        CELLBLOCK_MAX_RUN__CPU_TIME_S="5",
        CELLBLOCK_MAX_TESTS="4",
    ) as svc:
        svc.start_api()
        yield svc


@pytest.fixture(scope="module")
def kept() -> Iterator[Service]:
    with made_service(CELLBLOCK_RESULT_RETENTION_S=str(RETENTION_S)) as svc:
        svc.start_worker()
        svc.start_api()
        svc.wait_ready()
        yield svc


def job(source: str = "print(1)", **fields: Any) -> dict[str, Any]:
    return {"language": "python3", "files": [{"name": "main.py", "content": source}], **fields}


def stored_jobs(svc: Service) -> int:
    return sum(1 for key in svc.redis.client().scan_iter("cb:job:*") if not key.endswith(":events"))


def queued_tasks(svc: Service) -> int:
    client = svc.redis.client()
    return sum(int(client.llen(key)) for key in client.scan_iter("lang.*"))


def pttl(svc: Service, key: str) -> int:
    """Milliseconds left; -1 = never expires, -2 = gone."""
    return int(svc.redis.client().pttl(key))


def outlives(first: int, second: int, slack_ms: int = 300) -> bool:
    """A key with PTTL `first` lasts at least as long as one with PTTL `second` (-1 = forever)."""
    if first == -1:
        return True
    return second != -1 and first >= second - slack_ms


# --- request body cap (CELLBLOCK_MAX_BODY_KIB) --------------------------------------------------------------


def test_a_body_over_the_cap_is_413(crowded: Service) -> None:
    big = job("# " + "x" * (BODY_KIB * 1024 + 100))
    with crowded.client() as client:
        error = assert_error(client.post("/v1/jobs", json=big), 413, None)
        assert error["code"] == "body_too_large"
        assert_error(client.post("/v1/batches", json={"jobs": [big]}), 413, None)
    assert stored_jobs(crowded) == 0


def test_a_streamed_body_over_the_cap_is_413(crowded: Service) -> None:
    """No Content-Length (chunked): the cap must hold while the body is read."""

    def chunks() -> Iterator[bytes]:
        yield b'{"language": "python3", "files": [{"name": "main.py", "content": "# '
        for _ in range(BODY_KIB * 2):
            yield b"x" * 1024
        yield b'"}]}'

    with crowded.client() as client:
        response = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert assert_error(response, 413, None)["code"] == "body_too_large"
    assert stored_jobs(crowded) == 0


def test_a_body_under_the_cap_is_read(crowded: Service) -> None:
    almost = job("# " + "x" * (BODY_KIB * 1024 - 500))
    almost["language"] = "no-such-language"  # so that nothing is accepted
    with crowded.client() as client:
        assert_error(client.post("/v1/jobs", json=almost), 422, "language")


# --- configured maxima --------------------------------------------------------------------------------------


def test_limits_above_the_configured_maximum_are_422(crowded: Service) -> None:
    with crowded.client() as client:
        error = assert_error(client.post("/v1/jobs", json=job(limits={"cpu_time_s": 5.5})), 422, "limits.cpu_time_s")
        assert "5" in error["message"]
        tests = [{"stdin": str(i)} for i in range(5)]
        assert_error(client.post("/v1/jobs", json=job(tests=tests)), 422, "tests")
    assert stored_jobs(crowded) == 0


# --- backlog (CELLBLOCK_MAX_BACKLOG) ------------------------------------------------------------------------


def test_a_full_backlog_answers_503_with_retry_after_and_accepts_nothing(crowded: Service) -> None:
    with crowded.client() as client:
        first = client.post("/v1/jobs", json=job(), headers={"Idempotency-Key": "accepted-before"})
        assert first.status_code == 202, first.text
        for _ in range(BACKLOG - 1):
            assert client.post("/v1/jobs", json=job()).status_code == 202
        assert queued_tasks(crowded) == BACKLOG
        refused = client.post("/v1/jobs", json=job())
        error = assert_error(refused, 503, None)
        assert int(refused.headers["retry-after"]) >= 1
        assert str(BACKLOG) in error["message"]
        batch = client.post("/v1/batches", json={"jobs": [job()]})
        assert_error(batch, 503, None)
        assert int(batch.headers["retry-after"]) >= 1
        refused_with_key = client.post("/v1/jobs", json=job(), headers={"Idempotency-Key": "refused"})
        assert_error(refused_with_key, 503, None)
        assert (stored_jobs(crowded), queued_tasks(crowded)) == (BACKLOG, BACKLOG)
        assert crowded.redis.client().get("cb:idem:refused") is None, "a refused request bound its key"
        # Queued jobs are kept until they have run: retention starts when a job finishes.
        assert pttl(crowded, f"cb:job:{first.json()['id']}") == -1


def test_a_retry_of_an_accepted_job_is_answered_even_when_the_backlog_is_full(crowded: Service) -> None:
    key = {"Idempotency-Key": "accepted-before"}
    with crowded.client() as client:
        first = crowded.redis.client().get("cb:idem:accepted-before")
        if first is None:  # run on its own: accept the job now, while there is room
            first = client.post("/v1/jobs", json=job(), headers=key).json()["id"]
        while queued_tasks(crowded) < BACKLOG:
            assert client.post("/v1/jobs", json=job()).status_code == 202
        retry = client.post("/v1/jobs", json=job(), headers=key)
        assert retry.status_code == 202, f"the retry of an accepted job was refused: {retry.text}"
        assert retry.json()["id"] == first


def test_a_key_refused_for_backlog_works_once_there_is_room(crowded: Service) -> None:
    """Restart the (stateless) API with room in the backlog; the key refused earlier makes a real job."""
    crowded.kill_group(crowded.api, signal.SIGTERM)
    crowded.env = {**crowded.env, "CELLBLOCK_MAX_BACKLOG": "100"}
    crowded.start_api()
    with crowded.client() as client:
        response = client.post("/v1/jobs", json=job("print('late')"), headers={"Idempotency-Key": "refused"})
        assert response.status_code == 202, response.text
        found = client.get(f"/v1/jobs/{response.json()['id']}")
        assert found.status_code == 200, f"the key names a job that does not exist: {found.text}"
        assert found.json()["state"] == "queued"


# --- retention (CELLBLOCK_RESULT_RETENTION_S) ---------------------------------------------------------------


def test_a_finished_job_expires_after_the_retention(kept: Service) -> None:
    with kept.client() as client:
        result = client.post("/v1/jobs", params={"wait": "true"}, json=job()).json()
    assert result["state"] == "done"
    for key in (f"cb:job:{result['id']}", f"cb:job:{result['id']}:events"):
        left = pttl(kept, key)
        assert RETENTION_S * 1000 - 5000 < left <= RETENTION_S * 1000, f"{key}: PTTL {left} ms"


def test_a_batch_lasts_as_long_as_its_jobs(kept: Service) -> None:
    slow = job("import time\ntime.sleep(2)\nprint('slow')\n")
    with kept.client() as client:
        batch = client.post("/v1/batches", json={"jobs": [job(), slow]}).json()
        while client.get(f"/v1/jobs/{batch['jobs'][1]}").json()["state"] == "queued":
            time.sleep(0.05)
        running = pttl(kept, f"cb:batch:{batch['id']}")
        assert running == -1, f"the batch expires in {running} ms while one of its jobs is still running"
        while not client.get(f"/v1/batches/{batch['id']}").json()["done"]:
            time.sleep(0.1)
    jobs = [pttl(kept, f"cb:job:{job_id}") for job_id in batch["jobs"]]
    left = pttl(kept, f"cb:batch:{batch['id']}")
    assert all(outlives(left, j) for j in jobs), f"batch PTTL {left} ms, its jobs' {jobs} ms"


# --- idempotency keys ---------------------------------------------------------------------------------------


def runs_of(svc: Service, job_id: str) -> int:
    """How many times a worker started the job (its 'running' state events)."""
    events = svc.redis.client().xrange(f"cb:job:{job_id}:events")
    return sum(1 for _, fields in events if fields["type"] == "state" and '"running"' in fields["data"])


def wait_done(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if body["state"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_an_idempotency_header_makes_one_job_run_once(kept: Service) -> None:
    headers = {"Idempotency-Key": "header-key-1"}
    with kept.client() as client:
        first = client.post("/v1/jobs", json=job("print('once')"), headers=headers)
        second = client.post("/v1/jobs", json=job("print('once')"), headers=headers)
        assert first.status_code == second.status_code == 202
        job_id = first.json()["id"]
        assert second.json()["id"] == job_id
        result = wait_done(client, job_id)
        assert result["state"] == "done" and result["tests"], result
        again = client.post("/v1/jobs", params={"wait": "true"}, json=job("print('once')"), headers=headers)
        assert again.status_code == 200 and again.json() == result
    assert result["tests"][0]["run"]["stdout"] == "once\n", result
    assert runs_of(kept, job_id) == 1
    assert kept.redis.client().hget(f"cb:job:{job_id}", "attempts") == "1"
    assert stored_jobs(kept) >= 1


def test_an_idempotency_field_makes_one_job_run_once(kept: Service) -> None:
    spec = job("print('field')", idempotency_key="field-key-1")
    with kept.client() as client:
        ids = {client.post("/v1/jobs", json=spec).json()["id"] for _ in range(3)}
        assert len(ids) == 1
        job_id = ids.pop()
        assert wait_done(client, job_id)["verdict"] == "accepted"
        other = client.post("/v1/jobs", json=job("print('field')", idempotency_key="field-key-2")).json()["id"]
        assert other != job_id
        wait_done(client, other)
    assert runs_of(kept, job_id) == 1 and runs_of(kept, other) == 1


def test_concurrent_submissions_with_one_key_make_one_job(kept: Service) -> None:
    def submit(_: int) -> str:
        with kept.client() as client:
            response = client.post("/v1/jobs", json=job("print('race')"), headers={"Idempotency-Key": "race-1"})
            assert response.status_code == 202, response.text
            job_id: str = response.json()["id"]
            return job_id

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(submit, range(8)))
    assert len(ids) == 1
    job_id = ids.pop()
    with kept.client() as client:
        assert wait_done(client, job_id)["verdict"] == "accepted"
    time.sleep(0.5)
    assert runs_of(kept, job_id) == 1


def test_an_idempotency_key_lasts_as_long_as_its_job(kept: Service) -> None:
    """Else a retry after the key expired but while the job is still kept would run it a second time."""
    spec = job("import time\ntime.sleep(2)\n", idempotency_key="long-key-1")
    with kept.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        wait_done(client, job_id)
    job_left, key_left = pttl(kept, f"cb:job:{job_id}"), pttl(kept, "cb:idem:long-key-1")
    assert outlives(key_left, job_left), f"key PTTL {key_left} ms, job PTTL {job_left} ms"
