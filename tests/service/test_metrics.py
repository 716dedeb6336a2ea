"""Prometheus metrics through a real service (issue 6, item 3): known jobs move the counters by exactly that much.

The API starts before any worker, so the jobs submitted first wait in their queues (the backlog is exact);
then a worker starts and runs them. /metrics is scraped before, while queued, while a job runs, and after, and
the differences are checked: jobs by language, state and verdict, the histograms' counts (time in queue, run
time, sandbox overhead per step), HTTP requests by route template and status, slots busy and total. The
service requires API keys but is started with CELLBLOCK_METRICS_OPEN=true: the scraper needs none.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cellblock.models import ISOLATIONS
from tests.service.conftest import CELLBLOCK, Service, made_service, wait_until

pytestmark = pytest.mark.sandbox

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WORKER = "metrics-worker"
PRINT = {"language": "python3", "files": [{"name": "main.py", "content": "print(input())"}], "stdin": "hi"}
WRONG = {"language": "python3", "files": [{"name": "main.py", "content": "print(3)"}],
         "tests": [{"stdin": "", "expected_output": "4"}]}  # fmt: skip
BROKEN_C = {"language": "c", "files": [{"name": "main.c", "content": "int main(void) { return x; }"}]}
SLEEPER = {"language": "python3", "files": [{"name": "main.py", "content": "import time\ntime.sleep(60)"}],
           "limits": {"wall_time_s": 90}}  # fmt: skip


def scrape(api: httpx.Client) -> Samples:
    answer = api.get("/metrics")  # no key: CELLBLOCK_METRICS_OPEN=true
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}  # fmt: skip


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Calls:
    """An API client that counts its own requests by (method, route template, status)."""

    def __init__(self, api: httpx.Client, key: str) -> None:
        self.api, self.headers, self.made = api, {"Authorization": f"Bearer {key}"}, Counter[tuple[str, str, str]]()

    def call(self, method: str, url: str, route: str, **kwargs: Any) -> httpx.Response:
        answer = self.api.request(method, url, headers=self.headers, **kwargs)
        self.made[(method, route, str(answer.status_code))] += 1
        return answer

    def finished(self, job_id: str) -> dict[str, Any]:
        def done() -> bool:
            return self.call("GET", f"/v1/jobs/{job_id}", "/v1/jobs/{job_id}").json()["state"] in ("done", "cancelled")

        wait_until(done, timeout=120, interval=0.2, what=f"job {job_id}")
        body: dict[str, Any] = self.call("GET", f"/v1/jobs/{job_id}", "/v1/jobs/{job_id}").json()
        return body


@pytest.fixture(scope="module")
def svc() -> Iterator[tuple[Service, str]]:
    """Redis and the API, with no worker yet (the first test starts it); a key with read and submit."""
    with made_service(CELLBLOCK_AUTH="required", CELLBLOCK_METRICS_OPEN="true") as service:
        done = subprocess.run([*CELLBLOCK, "keys", "create", "--name", "metrics", "--scopes", "read,submit"],
                              env=service.env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        service.start_api()
        yield service, done.stdout.strip()


def test_counters_move_by_exactly_the_jobs_run(svc: tuple[Service, str]) -> None:
    service, key = svc
    with service.client() as api:
        calls = Calls(api, key)
        assert api.get("/v1/workers").status_code == 401  # keys are required; /metrics is open by setting
        before = scrape(api)
        assert not any(name == "cellblock_worker_slots" for name, _ in before)  # no worker yet

        # No worker is live, so the API accepts these and they wait in their queues.
        queued = [calls.call("POST", "/v1/jobs", "/v1/jobs", json=spec) for spec in (PRINT, PRINT, PRINT, WRONG)]
        queued.append(calls.call("POST", "/v1/jobs", "/v1/jobs", json=BROKEN_C))
        assert all(answer.status_code == 202 for answer in queued), [a.text for a in queued]
        waiting = scrape(api)
        assert value(waiting, "cellblock_queue_backlog", queue="lang.python3") == 4
        assert value(waiting, "cellblock_queue_backlog", queue="lang.c") == 1
        assert value(waiting, "cellblock_queue_backlog", queue="lang.ruby") == 0

        service.start_worker(slots=2, name=WORKER)
        results = [calls.finished(answer.json()["id"]) for answer in queued]
        assert [r["verdict"] for r in results] == ["accepted"] * 3 + ["wrong_answer", "compilation_error"]

        sleeper = calls.call("POST", "/v1/jobs", "/v1/jobs", json=SLEEPER).json()["id"]
        wait_until(lambda: calls.call("GET", f"/v1/jobs/{sleeper}", "/v1/jobs/{job_id}").json()["state"] == "running",
                   timeout=60, interval=0.1, what="the sleeper running")  # fmt: skip
        running = scrape(api)
        host = socket.gethostname()
        assert value(running, "cellblock_worker_slots", worker=WORKER, host=host) == 2
        assert value(running, "cellblock_worker_slots_busy", worker=WORKER, host=host) == 1
        assert calls.call("DELETE", f"/v1/jobs/{sleeper}", "/v1/jobs/{job_id}").status_code == 202
        assert calls.finished(sleeper)["state"] == "cancelled"
        calls.call("GET", "/v1/jobs/not-an-id", "/v1/jobs/{job_id}")  # 422
        assert api.get("/no/such/route").status_code == 404
        time.sleep(0.2)  # the latency of the last request is observed just after its answer went out
        after = scrape(api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    jobs = "cellblock_jobs_total"
    assert moved(jobs, language="python3", state="done", verdict="accepted") == 3
    assert moved(jobs, language="python3", state="done", verdict="wrong_answer") == 1
    assert moved(jobs, language="c", state="done", verdict="compilation_error") == 1
    assert moved(jobs, language="python3", state="cancelled", verdict="none") == 1
    assert sum(v for (name, _), v in after.items() if name == jobs) == 6
    assert moved("cellblock_host_jobs_total", host=socket.gethostname()) == 6  # the cancelled one, run on the host
    for histogram, python3, c in (("cellblock_job_queue_seconds", 5, 1), ("cellblock_job_run_seconds", 5, 1)):
        assert moved(f"{histogram}_count", language="python3") == python3, histogram
        assert moved(f"{histogram}_count", language="c") == c, histogram
        assert moved(f"{histogram}_bucket", language="c", le="+Inf") == c, histogram
    # one per step of a finished job: 3 + 1 test runs and the failed compile; the cancelled one none. Which label
    # each gets follows the service's isolation (fresh; or warm / prewarmed, fresh on a fallback): the sum is exact.
    # (That each label is right is tests/service/test_isolation.py's and tests/e2e/test_isolation.py's job.)
    assert sum(moved("cellblock_runs_total", isolation=kind) for kind in ISOLATIONS) == 5
    assert sum(v for (name, _), v in after.items() if name == "cellblock_runs_total") == 5
    overhead = "cellblock_sandbox_overhead_seconds"
    assert moved(f"{overhead}_count", language="python3", step="run") == 4  # the cancelled job ran no step to its end
    assert moved(f"{overhead}_count", language="c", step="compile") == 1
    assert moved(f"{overhead}_count", language="c", step="run") == 0
    mean_ms = 1000 * moved(f"{overhead}_sum", language="python3", step="run") / 4
    print(f"sandbox overhead per python3 run: {mean_ms:.1f} ms (mean of 4)")
    assert mean_ms > 0
    assert value(after, "cellblock_worker_slots_busy", worker=WORKER, host=host) == 0
    assert value(after, "cellblock_queue_backlog", queue="lang.python3") == 0

    requests = "cellblock_http_requests_total"
    for (method, route, status), count in calls.made.items():
        assert moved(requests, method=method, route=route, status=status) == count, (method, route, status)
    assert calls.made[("POST", "/v1/jobs", "202")] == 6 and calls.made[("GET", "/v1/jobs/{job_id}", "422")] == 1
    assert moved(requests, method="GET", route="/metrics", status="200") == 3  # before, waiting, running
    assert moved(requests, method="GET", route="unmatched", status="404") == 1
    assert moved(requests, method="GET", route="/v1/workers", status="401") == 0  # asked before `before`
    latency = "cellblock_http_request_duration_seconds_count"
    assert moved(latency, method="POST", route="/v1/jobs") == 6
    assert any(name == "process_resident_memory_bytes" for name, _ in after)


def test_every_response_carries_a_request_id(svc: tuple[Service, str]) -> None:
    with svc[0].client() as api:
        mine = api.get("/healthz", headers={"X-Request-ID": "client-chosen.id:42"})
        assert mine.headers["x-request-id"] == "client-chosen.id:42"
        made = api.get("/healthz").headers["x-request-id"]
        assert len(made) == 32 and int(made, 16) >= 0
        hostile = api.get("/healthz", headers={"X-Request-ID": 'evil\tline {"level": "ERROR"}'})
        assert hostile.headers["x-request-id"] != "evil" and len(hostile.headers["x-request-id"]) == 32
        assert api.get("/v1/languages").headers["x-request-id"]  # on errors too (401 here)
