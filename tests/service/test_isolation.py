"""`StepResult.isolation` on the wire: /v1 says which sandbox ran each step; the drop-in Judge0 (/judge0) and
Piston (/api/v2) answers stay exactly as upstream's, without it. A worker with isolation=warm, a real Redis and API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cellblock.api.judge0.render import ALL_FIELDS
from tests.service.conftest import Service, made_service, wait_until

pytestmark = pytest.mark.sandbox

C_SOURCE = '#include <stdio.h>\nint main(void) { char s[64]; if (scanf("%63s", s) == 1) puts(s); return 0; }\n'
PISTON_STAGE = {"stdout", "stderr", "output", "code", "signal", "message", "status", "cpu_time", "wall_time", "memory"}


@pytest.fixture(scope="module")
def warm_service() -> Iterator[Service]:
    with made_service(CELLBLOCK_ISOLATION="warm", CELLBLOCK_ALLOW_NETWORK="true") as svc:
        svc.start_worker(slots=1)
        svc.start_api()
        svc.wait_ready()
        yield svc


@pytest.fixture
def api(warm_service: Service) -> Iterator[httpx.Client]:
    with warm_service.client(timeout=120) as client:
        yield client


def finished(api: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    submitted = api.post("/v1/jobs", json=spec)
    assert submitted.status_code == 202, submitted.text
    url = submitted.json()["url"]
    wait_until(lambda: api.get(url).json()["state"] in ("done", "failed"), timeout=120, interval=0.1, what="the job")
    body: dict[str, Any] = api.get(url).json()
    assert body["verdict"] == "accepted", body
    return body


def test_v1_step_results_say_which_isolation_ran_them(api: httpx.Client) -> None:
    spec = {"language": "c", "files": [{"name": "main.c", "content": C_SOURCE}], "tests": [{"stdin": "hi"}]}
    body = finished(api, spec)
    assert (body["compile"]["isolation"], body["tests"][0]["run"]["isolation"]) == ("warm", "warm")
    body = finished(api, {**spec, "network": True})  # not eligible for a warm slot: the run is fresh
    assert (body["compile"]["isolation"], body["tests"][0]["run"]["isolation"]) == ("warm", "fresh")


def test_judge0_and_piston_answers_do_not_carry_it(api: httpx.Client, warm_service: Service) -> None:
    with httpx.Client(base_url=warm_service.base_url + "/judge0", timeout=120) as j0:
        answer = j0.post("/submissions", params={"wait": "true", "fields": "*"},
                         json={"source_code": C_SOURCE, "language_id": 50, "stdin": "hi"})  # fmt: skip
    assert answer.status_code == 201, answer.text
    assert list(answer.json()) == list(ALL_FIELDS) and answer.json()["stdout"] == "hi\n"
    piston = api.post("/api/v2/execute", json={"language": "c", "version": "*", "stdin": "hi",
                                               "files": [{"name": "main.c", "content": C_SOURCE}]})  # fmt: skip
    assert piston.status_code == 200, piston.text
    assert set(piston.json()) == {"language", "version", "compile", "run"}
    assert set(piston.json()["compile"]) == set(piston.json()["run"]) == PISTON_STAGE
    assert piston.json()["run"]["stdout"] == "hi\n"
    assert "isolation" not in answer.text + piston.text
