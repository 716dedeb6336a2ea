"""Logs (issue 6, item 4): JSON lines when asked, one request id from the API to the worker to the sandbox run,
and never a program's source, input or output in any line.

A real service runs with CELLBLOCK_LOG_FORMAT=json and Cellblock's loggers at DEBUG (where a leak is most likely).
Jobs carry a unique marker in their source, stdin, expected output, compile errors, tracebacks and a custom
checker's output; then every log the service wrote is searched: the marker must be nowhere, and each request's id
must be on the API's lines and on the worker's lines about that job, the sandbox run's step lines among them.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import CELLBLOCK, Service, made_service, wait_until
from tests.service.test_serve_embedded import Embedded
from tests.service.test_webhooks import Receiver

pytestmark = pytest.mark.sandbox

MARK = f"SECRET{uuid.uuid4().hex[:12]}"  # never to be logged
SOURCE_MARK, INPUT_MARK, EXPECTED_MARK = f"{MARK}src", f"{MARK}in", f"{MARK}exp"


@pytest.fixture(scope="module")
def svc() -> Iterator[Service]:
    with made_service(CELLBLOCK_LOG_FORMAT="json", CELLBLOCK_LOG_LEVEL="DEBUG") as service:
        service.start_worker()
        service.start_webhooks()
        service.start_api()
        service.wait_ready()
        yield service


def jobs() -> dict[str, dict[str, Any]]:
    """Each job puts the marker somewhere a careless log line would pick it up."""
    echo = f"# {SOURCE_MARK}\nimport sys\ndata = sys.stdin.read()\nprint(data[::-1])\nprint(data, file=sys.stderr)\n"
    checker = f"import sys\nprint('{MARK}checker-out')\nprint('{MARK}checker-err', file=sys.stderr)\nsys.exit(3)\n"
    return {
        "echo": {"language": "python3", "files": [{"name": "main.py", "content": echo}], "stdin": INPUT_MARK},
        "wrong": {"language": "python3", "files": [{"name": "main.py", "content": echo}],
                  "tests": [{"stdin": INPUT_MARK, "expected_output": EXPECTED_MARK}]},
        "crash": {"language": "python3", "files": [{"name": "main.py", "content": f"raise ValueError('{MARK}raise')"}]},
        "compile": {"language": "c", "files": [{"name": "main.c", "content": f"int main(void) {{ return {MARK}c; }}"}]},
        "checker": {"language": "python3", "files": [{"name": "main.py", "content": echo}],
                    "tests": [{"stdin": INPUT_MARK, "expected_output": INPUT_MARK}],
                    "checker": {"kind": "custom", "language": "python3", "source": checker}},
    }  # fmt: skip


# Celery prints this itself (to the original stdout, past logging) when it gets SIGTERM: the one line not in JSON.
CELERY_SHUTDOWN = re.compile(r"^worker: (Warm|Cold) shutdown \(MainProcess\)$")


def lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log, parsed: in JSON mode each must be one JSON object."""
    parsed = []
    for line in path.read_text().splitlines():
        if line.strip() and not CELERY_SHUTDOWN.match(line):
            record = json.loads(line)  # a line that is not JSON fails here
            assert {"ts", "level", "logger", "message"} <= set(record), line
            parsed.append(record)
    return parsed


def test_one_request_id_through_and_no_user_data_in_any_log(svc: Service) -> None:
    ids: dict[str, tuple[str, str]] = {}  # name → (request id, job id)
    receiver = Receiver().start()  # the echo job's result goes to a webhook too: the sender logs that job
    specs = jobs()
    specs["echo"]["callback_url"] = receiver.url
    with svc.client() as api:
        for name, spec in specs.items():
            request_id = f"logtest-{name}-{uuid.uuid4().hex[:8]}"
            answer = api.post("/v1/jobs", params={"wait": "true"}, json=spec, headers={"X-Request-ID": request_id})
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-request-id"] == request_id
            ids[name] = (request_id, answer.json()["id"])
            assert MARK in answer.text or name == "compile" or name == "crash"  # the user does get their data
        verdicts = {name: api.get(f"/v1/jobs/{job}").json()["verdict"] for name, (_, job) in ids.items()}
        judge0_id = f"logtest-judge0-{uuid.uuid4().hex[:8]}"
        judge0 = api.post("/judge0/submissions", params={"wait": "true"}, headers={"X-Request-ID": judge0_id},
                          json={"source_code": f"print('{MARK}j0')", "language_id": 71})  # fmt: skip
        assert judge0.status_code == 201 and judge0.headers["x-request-id"] == judge0_id, judge0.text
    assert verdicts == {"echo": "accepted", "wrong": "wrong_answer", "crash": "runtime_error",
                        "compile": "compilation_error", "checker": "internal_error"}  # fmt: skip
    try:
        assert MARK[::-1] in receiver.wait_for(1)[0].body.decode()  # the result, with the program's output
    finally:
        receiver.stop()
    worker_log, webhooks_log = svc.root / "worker-0.log", svc.root / "webhooks.log"
    wait_until(lambda: all(f"job {job} finished" in worker_log.read_text() for _, job in ids.values())
               and "webhook delivered" in webhooks_log.read_text(), timeout=10, what="the last lines")  # fmt: skip

    logs = sorted(svc.root.glob("*.log")) + sorted(svc.root.glob("redis/*.log"))
    assert {p.name for p in logs} >= {"api.log", "worker-0.log", "webhooks.log"}
    for path in logs:
        text = path.read_text(errors="replace")
        assert MARK not in text and MARK[::-1] not in text, f"user data in {path.name}"

    api_lines, worker_lines = lines(svc.root / "api.log"), lines(svc.root / "worker-0.log")
    webhook_lines = lines(svc.root / "webhooks.log")
    delivered = [r for r in webhook_lines if "webhook delivered" in r["message"]]
    assert [(r["request_id"], r["job_id"]) for r in delivered] == [ids["echo"]]
    for name, (request_id, job_id) in ids.items():
        mine = [r for r in api_lines if r.get("request_id") == request_id]
        assert any(f"job {job_id} stored" in r["message"] for r in mine), name
        assert any(r["message"].startswith("POST /v1/jobs 200") for r in mine), name
        about_job = [r for r in worker_lines if r.get("job_id") == job_id]
        assert about_job and all(r.get("request_id") == request_id for r in about_job), name
        assert any(r["message"].startswith(f"job {job_id} finished") for r in about_job), name
        steps = [r for r in about_job if r["message"].startswith("step ")]  # the sandbox runs of the job
        assert steps, name
    print(f"{len(api_lines)} API lines, {len(worker_lines)} worker lines; marker in none")
    assert any(r.get("request_id") == judge0_id for r in worker_lines)  # through the Judge0 API as well
    failed = [r for r in worker_lines if r.get("job_id") == ids["checker"][1] and r["level"] == "ERROR"]
    assert failed and all("internal_error" in r["message"] for r in failed)  # said, without the checker's words


def test_embedded_serve_logs_json_from_every_process_and_serves_the_metrics() -> None:
    """`cellblock serve --log-format json`: its own lines and its worker's, webhooks' and API's are all JSON, and
    its API's /metrics covers its workers (nothing else to scrape)."""
    root = Path(tempfile.mkdtemp(prefix="cellblock-logs-", dir="/var/tmp"))
    root.chmod(0o711)  # the slots' uids traverse it to their boxes
    embedded = Embedded(root)
    argv = [*CELLBLOCK, "serve", "--port", str(embedded.port), "--slots", "2", "--log-format", "json"]
    try:
        with open(embedded.log, "wb") as log:
            embedded.proc = subprocess.Popen(argv, env=embedded.env, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)  # fmt: skip
        wait_until(lambda: httpx.get(f"{embedded.base_url}/readyz", timeout=1).status_code == 200, timeout=90,
                   interval=0.2, what="cellblock serve to be ready")  # fmt: skip
        with embedded.client() as api:
            done = api.post("/v1/jobs", params={"wait": "true"}, json=jobs()["echo"], headers={"X-Request-ID": "emb-1"})
            assert done.status_code == 200 and done.json()["verdict"] == "accepted", done.text
            scraped = text_string_to_metric_families(api.get("/metrics").text)
            metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in scraped for s in f.samples}
        labels = (("language", "python3"), ("state", "done"), ("verdict", "accepted"))
        assert metrics[("cellblock_jobs_total", labels)] == 1
        assert [v for (name, _), v in metrics.items() if name == "cellblock_worker_slots"] == [2]
        embedded.proc.send_signal(signal.SIGTERM)
        embedded.proc.wait(60)
        records = lines(embedded.log)
        assert {r["logger"] for r in records} >= {"cellblock.service", "cellblock.worker", "cellblock.api.store"}
        assert any(r.get("request_id") == "emb-1" and r["logger"] == "cellblock.worker" for r in records)
        assert MARK not in embedded.log.read_text()
    finally:
        Service.kill_group(embedded.proc)
        shutil.rmtree(embedded.root, ignore_errors=True)
