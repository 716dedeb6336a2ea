"""GET /v1/languages, /v1/workers, /healthz, /readyz, /docs and /openapi.json against live workers.

Two real workers: "meta-interp" (1 slot) whose compile limits are set so low that every compiled language
fails its self-test, and "meta-full" (2 slots). The last test kills them, then Redis.
"""

from __future__ import annotations

import shutil
import signal
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import cellblock
from tests.service.conftest import Service, make_service

pytestmark = pytest.mark.sandbox

COMPILED = {"c", "cpp", "go", "java", "rust", "typescript"}
INTERP, FULL = "meta-interp", "meta-full"
WORKER_TTL_S = 3.0


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    svc = make_service(CELLBLOCK_WORKER_TTL_S=str(WORKER_TTL_S), CELLBLOCK_HEARTBEAT_INTERVAL_S="0.5")
    try:
        base = svc.env
        # No compiler fits in 8 MiB and 20 ms of CPU: this worker's compiled languages fail their self-tests.
        svc.env = {
            **base,
            "CELLBLOCK_DEFAULT_COMPILE__MEMORY_MIB": "8",
            "CELLBLOCK_DEFAULT_COMPILE__CPU_TIME_S": "0.02",
        }
        svc.start_worker(slots=1, name=INTERP)
        svc.env = base
        svc.start_worker(slots=2, name=FULL)
        svc.start_api()
        svc.wait_ready(workers=2)
        yield svc
    finally:
        svc.stop()
        shutil.rmtree(svc.root, ignore_errors=True)


def workers_by_name(api: httpx.Client) -> dict[str, dict[str, Any]]:
    response = api.get("/v1/workers")
    assert response.status_code == 200, response.text
    return {w["name"]: w for w in response.json()["workers"]}


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def python_job(source: str, **fields: Any) -> dict[str, Any]:
    return {"language": "python3", "files": [{"name": "main.py", "content": source}], **fields}


def test_workers_describe_each_live_worker(api: httpx.Client) -> None:
    workers = workers_by_name(api)
    assert set(workers) == {INTERP, FULL}
    assert (workers[INTERP]["slots"], workers[FULL]["slots"]) == (1, 2)
    for worker in workers.values():
        assert worker["host"] == socket.gethostname()
        assert worker["version"] == cellblock.__version__
        assert worker["busy"] == 0
        assert "python3" in worker["languages"]
        assert set(worker["language_versions"]) == set(worker["languages"])
        assert abs((datetime.now(UTC) - datetime.fromisoformat(worker["last_seen"])).total_seconds()) < 3
    assert not COMPILED & set(workers[INTERP]["languages"])
    assert set(workers[FULL]["languages"]) >= COMPILED
    backlog = api.get("/v1/workers").json()["backlog"]
    assert backlog["lang.python3"] == 0 and all(isinstance(n, int) for n in backlog.values())


def test_last_seen_moves_with_the_heartbeat(api: httpx.Client) -> None:
    before = workers_by_name(api)[FULL]["last_seen"]
    time.sleep(1.2)
    after = workers_by_name(api)[FULL]["last_seen"]
    assert datetime.fromisoformat(after) > datetime.fromisoformat(before)


def test_busy_counts_the_jobs_a_worker_runs(api: httpx.Client) -> None:
    job_id = api.post("/v1/jobs", json=python_job("import time\ntime.sleep(3)\n", limits={"wall_time_s": 10})).json()
    job_id = job_id["id"]
    wait_until(lambda: api.get(f"/v1/jobs/{job_id}").json()["state"] == "running", 30, "the job to start")
    worker = api.get(f"/v1/jobs/{job_id}").json()["worker"]
    wait_until(lambda: workers_by_name(api)[worker]["busy"] == 1, 3, f"{worker} to report busy=1")
    wait_until(lambda: api.get(f"/v1/jobs/{job_id}").json()["state"] == "done", 30, "the job to finish")
    wait_until(lambda: workers_by_name(api)[worker]["busy"] == 0, 3, f"{worker} to report busy=0")


def test_languages_are_those_some_live_worker_passed(api: httpx.Client) -> None:
    workers = workers_by_name(api)
    languages = {lang["name"]: lang for lang in api.get("/v1/languages").json()}
    assert set(languages) == set(workers[INTERP]["languages"]) | set(workers[FULL]["languages"])
    assert languages["python3"]["workers"] == 2 and languages["c"]["workers"] == 1
    assert languages["c"]["version"] == workers[FULL]["language_versions"]["c"]
    assert languages["c"]["compiled"] is True and languages["python3"]["compiled"] is False
    assert "py" in languages["python3"]["aliases"] and languages["python3"]["source_file"] == "main.py"


def test_healthz(api: httpx.Client) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_readyz_with_live_workers(api: httpx.Client) -> None:
    response = api.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "problems": []}


def test_docs_page_is_served(api: httpx.Client) -> None:
    response = api.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "swagger" in response.text.lower() and "/openapi.json" in response.text


def test_openapi_lists_every_route(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    routes = {(path, method) for path, item in paths.items() for method in item}
    assert {
        ("/v1/jobs", "post"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}", "delete"),
        ("/v1/jobs/{job_id}/events", "get"),
        ("/v1/batches", "post"),
        ("/v1/batches/{batch_id}", "get"),
        ("/v1/languages", "get"),
        ("/v1/workers", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    } <= routes
    assert paths["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("JobSpec")


def test_openapi_documents_the_error_shape_it_answers_with(api: httpx.Client) -> None:
    """422s are {"error": {code, message, field}}, so that is what /docs must show, not FastAPI's default."""
    spec = api.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas, "/docs shows FastAPI's 422 body, which the API never sends"
    error_schemas = [name for name, schema in schemas.items() if set(schema.get("properties", {})) == {"error"}]
    assert error_schemas, "no schema for the error body"
    post = spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert (
        "422" in post and post["422"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1] in error_schemas
    )


REQUEST_MODELS = ["JobSpec", "SourceFile", "Limits", "TestCase", "BuiltinChecker", "CustomChecker", "BatchSpec"]
RESPONSE_MODELS = [
    "JobAccepted", "JobResult", "TestResult", "StepResult", "OutputFile", "BatchAccepted", "BatchStatus",
    "LanguageInfo", "WorkerInfo", "WorkersStatus", "Health",
]  # fmt: skip


def undocumented(api: httpx.Client, models: list[str]) -> dict[str, list[str]]:
    """model -> its fields that lack a description or an example in /openapi.json."""
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    missing = {}
    for model in models:
        props = schemas[model]["properties"]
        bare = [
            name
            + ("" if prop.get("description") else " (no description)")
            + ("" if prop.get("examples") or "example" in prop else " (no example)")
            for name, prop in props.items()
            if not prop.get("description") or not (prop.get("examples") or "example" in prop)
        ]
        if bare:
            missing[model] = bare
    return missing


def test_every_request_field_has_a_description_and_an_example(api: httpx.Client) -> None:
    assert undocumented(api, REQUEST_MODELS) == {}


def test_every_response_field_has_a_description_and_an_example(api: httpx.Client) -> None:
    assert undocumented(api, RESPONSE_MODELS) == {}


def test_dead_workers_drop_out_then_readiness_follows(api: httpx.Client, service: Service) -> None:
    """Destructive, so last: kill one worker, then the other, then Redis."""
    full, interp = service.workers[1], service.workers[0]
    service.kill_group(full, signal.SIGKILL)  # no goodbye: it must vanish by its heartbeat's TTL
    wait_until(lambda: set(workers_by_name(api)) == {INTERP}, WORKER_TTL_S + 5, "the killed worker to drop out")
    interp_languages = set(workers_by_name(api)[INTERP]["languages"])
    wait_until(lambda: {lang["name"] for lang in api.get("/v1/languages").json()} == interp_languages, 5,
               "/v1/languages to follow")  # fmt: skip
    c_job = {"language": "c", "files": [{"name": "main.c", "content": "int main(void){return 0;}"}]}
    refused = api.post("/v1/jobs", json=c_job)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "language"
    ran = api.post("/v1/jobs", params={"wait": "true"}, json=python_job("print('still')"))
    assert ran.json()["verdict"] == "accepted" and ran.json()["worker"] == INTERP
    assert api.get("/readyz").status_code == 200

    service.kill_group(interp, signal.SIGKILL)
    wait_until(lambda: workers_by_name(api) == {}, WORKER_TTL_S + 5, "every worker to drop out")
    assert api.get("/v1/languages").json() == []
    not_ready = api.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["status"] != "ready" and "worker" in " ".join(not_ready.json()["problems"])
    assert api.get("/healthz").status_code == 200

    service.redis.kill()
    no_redis = api.get("/readyz")
    assert no_redis.status_code == 503
    assert "redis" in " ".join(no_redis.json()["problems"]).lower()
    assert api.get("/healthz").status_code == 200
    # Without its store the API is unavailable, not broken: 503 + Retry-After, like a broker outage, on the
    # same keep-alive connection (an unhandled error would also make the server drop it).
    for method, url, body in (
        ("GET", f"/v1/jobs/{ran.json()['id']}", None),
        ("POST", "/v1/jobs", python_job("print(1)")),
        ("GET", "/v1/workers", None),
        ("GET", "/v1/languages", None),
    ):
        response = api.request(method, url, json=body)
        assert response.status_code == 503, f"{method} {url}: {response.status_code} {response.text}"
        assert response.headers.get("retry-after", "").isdigit(), f"{method} {url}: no Retry-After"
        assert set(response.json()["error"]) == {"code", "message", "field"}
        assert "Traceback" not in response.text
