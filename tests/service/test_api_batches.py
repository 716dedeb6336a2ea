"""POST /v1/batches and GET /v1/batches/{id}: many jobs in one request, all or nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service, assert_error, made_service

pytestmark = pytest.mark.sandbox


def job(source: str, language: str = "python3", name: str = "main.py", **fields: Any) -> dict[str, Any]:
    return {"language": language, "files": [{"name": name, "content": source}], **fields}


def stored_jobs(svc: Service) -> int:
    """Job hashes in the job store, and tasks waiting in the broker's queues."""
    client = svc.redis.client()
    return sum(1 for key in client.scan_iter("cb:job:*") if not key.endswith(":events"))


def queued_tasks(svc: Service) -> int:
    client = svc.redis.client()
    return sum(int(client.llen(key)) for key in client.scan_iter("lang.*"))


def wait_for_batch(api: httpx.Client, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = api.get(f"/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["done"]:
            return body
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def idle() -> Iterator[Service]:
    """Redis + API, no worker: accepted jobs stay queued (default max_batch_jobs = 1000)."""
    with made_service() as svc:
        svc.start_api()
        yield svc


@pytest.fixture(scope="module")
def small() -> Iterator[Service]:
    """Redis + API, no worker, CELLBLOCK_MAX_BATCH_JOBS=5."""
    with made_service(CELLBLOCK_MAX_BATCH_JOBS="5") as svc:
        svc.start_api()
        yield svc


def test_a_batch_of_50_jobs_runs_every_job_in_order(api: httpx.Client) -> None:
    specs = [job(f"print({i} * 3)") for i in range(50)]
    response = api.post("/v1/batches", json={"jobs": specs})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert len(accepted["jobs"]) == 50 and len(set(accepted["jobs"])) == 50
    assert accepted["url"] == f"/v1/batches/{accepted['id']}"
    status = wait_for_batch(api, accepted["id"])
    assert status["id"] == accepted["id"] and status["total"] == 50
    assert status["states"] == {"done": 50} and status["verdicts"] == {"accepted": 50}
    assert [j["id"] for j in status["jobs"]] == accepted["jobs"]
    assert [j["tests"][0]["run"]["stdout"] for j in status["jobs"]] == [f"{i * 3}\n" for i in range(50)]
    # Each job of a batch is a job like any other.
    one = api.get(f"/v1/jobs/{accepted['jobs'][17]}").json()
    assert one == status["jobs"][17]


def test_a_batch_counts_states_and_verdicts(api: httpx.Client) -> None:
    specs = [
        job("print(input())", tests=[{"stdin": "x", "expected_output": "x"}]),
        job("print(input())", tests=[{"stdin": "x", "expected_output": "y"}]),
        job("raise SystemExit(3)"),
        job("int main(void) { return nope; }", language="c", name="main.c"),
        job("print('ok')"),
    ]
    batch = api.post("/v1/batches", json={"jobs": specs}).json()
    status = wait_for_batch(api, batch["id"])
    assert [j["verdict"] for j in status["jobs"]] == [
        "accepted",
        "wrong_answer",
        "runtime_error",
        "compilation_error",
        "accepted",
    ]
    assert status["verdicts"] == {"accepted": 2, "wrong_answer": 1, "runtime_error": 1, "compilation_error": 1}
    assert status["states"] == {"done": 5} and status["total"] == 5


def test_one_bad_job_refuses_the_whole_batch(api: httpx.Client, service: Service) -> None:
    before = (stored_jobs(service), queued_tasks(service))
    specs = [job(f"print({i})") for i in range(5)]
    specs[3]["language"] = "cobol-85"
    error = assert_error(api.post("/v1/batches", json={"jobs": specs}), 422, "jobs[3].language")
    assert "cobol-85" in error["message"]
    assert (stored_jobs(service), queued_tasks(service)) == before


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"language": 5}, "jobs[3].language"),
        ({"limits": {"cpu_time_s": 1000}}, "jobs[3].limits.cpu_time_s"),
        ({"files": [{"name": "../x.py", "content": "print(1)"}]}, "jobs[3].files[0].name"),
        ({"files": [{"name": "main.py", "content": ""}]}, "jobs[3].files[0].content"),
        ({"surprise": True}, "jobs[3].surprise"),
    ],
)
def test_a_bad_field_in_a_batch_is_named_with_its_job_index(
    api: httpx.Client, service: Service, patch: dict[str, Any], field: str
) -> None:
    before = stored_jobs(service)
    specs = [job(f"print({i})") for i in range(5)]
    specs[3].update(patch)
    assert_error(api.post("/v1/batches", json={"jobs": specs}), (400, 422), field)
    assert stored_jobs(service) == before


def test_an_empty_batch_is_refused(api: httpx.Client) -> None:
    assert_error(api.post("/v1/batches", json={"jobs": []}), 422, "jobs")


def test_batch_ids_are_checked(api: httpx.Client) -> None:
    assert_error(api.get("/v1/batches/not-a-batch"), 422, "id")
    assert_error(api.get(f"/v1/batches/{'b' * 32}"), 404, "id")


def test_the_configured_batch_limit_is_enforced(small: Service) -> None:
    with small.client() as client:
        five = client.post("/v1/batches", json={"jobs": [job(f"print({i})") for i in range(5)]})
        assert five.status_code == 202, five.text
        before = (stored_jobs(small), queued_tasks(small))
        assert before == (5, 5)
        error = assert_error(client.post("/v1/batches", json={"jobs": [job("print(1)")] * 6}), 422, "jobs")
        assert "5" in error["message"]
        assert (stored_jobs(small), queued_tasks(small)) == before


def test_the_default_batch_limit_is_1000(idle: Service) -> None:
    with idle.client() as client:
        too_many = client.post("/v1/batches", json={"jobs": [job("print(1)")] * 1001})
        assert_error(too_many, 422, "jobs")
        assert stored_jobs(idle) == 0 and queued_tasks(idle) == 0
        started = time.monotonic()
        response = client.post("/v1/batches", json={"jobs": [job(f"print({i})") for i in range(1000)]})
        took = time.monotonic() - started
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert len(set(accepted["jobs"])) == 1000
        assert stored_jobs(idle) == 1000 and queued_tasks(idle) == 1000
        status = client.get(f"/v1/batches/{accepted['id']}").json()
        assert status["total"] == 1000 and status["states"] == {"queued": 1000} and status["done"] is False
        assert took < 20, f"accepting 1000 jobs took {took:.1f} s"
