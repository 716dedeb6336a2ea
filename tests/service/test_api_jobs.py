"""POST /v1/jobs and GET /v1/jobs/{id} through a real API, a real worker and a real Redis."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.service.conftest import assert_error

pytestmark = pytest.mark.sandbox

DOUBLE = "print(input() * 2)\n"
SUM = "a, b = map(int, input().split())\nprint(a + b)\n"


def job(source: str, language: str = "python3", name: str = "main.py", **fields: Any) -> dict[str, Any]:
    return {"language": language, "files": [{"name": name, "content": source}], **fields}


def poll_until_finished(api: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = api.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["state"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def test_submit_answers_202_with_an_id_then_the_result_is_there_to_get(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json=job(DOUBLE, stdin="ab"))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}", accepted["id"])
    assert accepted["url"] == f"/v1/jobs/{accepted['id']}"
    assert accepted["state"] in ("queued", "running", "done")
    result = poll_until_finished(api, accepted["id"])
    assert result["id"] == accepted["id"]
    assert (result["state"], result["verdict"], result["language"]) == ("done", "accepted", "python3")
    run = result["tests"][0]["run"]
    assert run["stdout"] == "abab\n" and run["exit_code"] == 0
    assert run["cpu_time_s"] > 0 and run["memory_kib"] > 0
    created, started, finished = (
        datetime.fromisoformat(result[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= finished <= datetime.now(UTC)
    live = {w["name"] for w in api.get("/v1/workers").json()["workers"]}
    assert result["worker"] in live


def test_every_submission_is_a_new_job(api: httpx.Client) -> None:
    ids = {api.post("/v1/jobs", json=job(DOUBLE, stdin="x")).json()["id"] for _ in range(3)}
    assert len(ids) == 3
    for job_id in ids:
        assert poll_until_finished(api, job_id)["tests"][0]["run"]["stdout"] == "xx\n"


def test_wait_true_answers_200_with_the_job_result(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", params={"wait": "true"}, json=job(SUM, stdin="20 22"))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["state"] == "done" and result["verdict"] == "accepted"
    assert result["tests"][0]["run"]["stdout"] == "42\n"
    assert result["finished_at"] is not None
    # The same result is what GET answers afterwards.
    again = api.get(f"/v1/jobs/{result['id']}").json()
    assert again == result


def test_language_alias_runs_the_language(api: httpx.Client) -> None:
    result = api.post("/v1/jobs", params={"wait": "true"}, json=job("print(7)", language="py")).json()
    assert result["language"] == "python3" and result["tests"][0]["run"]["stdout"] == "7\n"


def test_compile_error_is_a_verdict_with_the_compiler_output(api: httpx.Client) -> None:
    source = "int main(void) { return undefined_name; }\n"
    response = api.post("/v1/jobs", params={"wait": "true"}, json=job(source, language="c", name="main.c"))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["state"] == "done" and result["verdict"] == "compilation_error"
    assert result["compile"]["outcome"] != "ok"
    assert "undefined_name" in result["compile"]["stderr"]
    assert all(test["run"] is None for test in result["tests"])


def test_a_compiled_program_runs_every_test(api: httpx.Client) -> None:
    source = '#include <stdio.h>\nint main(void){int a,b;scanf("%d %d",&a,&b);printf("%d\\n",a*b);return 0;}\n'
    tests = [{"stdin": "2 3", "expected_output": "6"}, {"stdin": "4 5", "expected_output": "20"}]
    result = api.post(
        "/v1/jobs", params={"wait": "true"}, json=job(source, language="c", name="main.c", tests=tests)
    ).json()
    assert result["verdict"] == "accepted" and result["compile"]["outcome"] == "ok"
    assert [t["run"]["stdout"] for t in result["tests"]] == ["6\n", "20\n"]


def test_wrong_answer_is_judged_per_test(api: httpx.Client) -> None:
    tests = [
        {"id": "small", "stdin": "1 2", "expected_output": "3"},
        {"id": "wrong", "stdin": "2 2", "expected_output": "5"},
        {"id": "big", "stdin": "100 200", "expected_output": "300"},
    ]
    result = api.post("/v1/jobs", params={"wait": "true"}, json=job(SUM, tests=tests)).json()
    assert result["verdict"] == "wrong_answer"
    assert [(t["id"], t["verdict"]) for t in result["tests"]] == [
        ("small", "accepted"),
        ("wrong", "wrong_answer"),
        ("big", "accepted"),
    ]
    assert result["tests"][1]["run"]["stdout"] == "4\n"


def test_requested_limits_reach_the_sandbox(api: httpx.Client) -> None:
    spin = job("while True:\n    pass\n", limits={"cpu_time_s": 0.5, "wall_time_s": 5})
    result = api.post("/v1/jobs", params={"wait": "true"}, json=spin).json()
    assert result["verdict"] == "time_limit_exceeded"
    run = result["tests"][0]["run"]
    assert run["outcome"] == "time_limit_cpu"
    assert 0.5 <= run["cpu_time_s"] < 1.5


def test_get_of_an_unknown_job_is_404(api: httpx.Client) -> None:
    assert_error(api.get(f"/v1/jobs/{'0' * 32}"), 404, "id")


def test_get_of_a_malformed_id_is_422(api: httpx.Client) -> None:
    assert_error(api.get("/v1/jobs/not-a-job-id"), 422, "id")
