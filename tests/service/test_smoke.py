"""The service end to end: submit, wait, poll, stream."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.sandbox

JOB = {"language": "python3", "files": [{"name": "m.py", "content": "print(input() * 2)"}], "stdin": "ab"}


def test_submit_and_wait(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", params={"wait": "true"}, json=JOB)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["verdict"] == "accepted" and body["tests"][0]["run"]["stdout"] == "abab\n"
    assert body["worker"]


def test_submit_then_poll(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json=JOB)
    assert response.status_code == 202
    job_id = response.json()["id"]
    import time

    for _ in range(200):
        body = api.get(f"/v1/jobs/{job_id}").json()
        if body["state"] == "done":
            break
        time.sleep(0.05)
    assert body["state"] == "done" and body["verdict"] == "accepted"
