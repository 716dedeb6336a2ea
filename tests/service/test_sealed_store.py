"""Sealed job store: what Redis holds of a program, its input, its output and its result is sealed with the
cluster key, bound to its job; a worker runs no spec it cannot open, a client sees no result it cannot open,
and a host whose cluster keys differ from the cluster's refuses to start.

Attacks are made on the real store of a real service: a spec replaced in a queued job's hash (in clear, or
another job's sealed spec), a result replaced in a finished job's hash, a worker and an API started with a
key the cluster does not hold.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet

from cellblock.state import CLUSTER_KEY_CHECK, job_key
from tests.service.conftest import CELLBLOCK, Service, made_service, wait_until

pytestmark = pytest.mark.sandbox

KEY = Fernet.generate_key().decode()


def job(source: str, stdin: str = "") -> dict[str, Any]:
    return {"language": "python3", "files": [{"name": "main.py", "content": source}], "stdin": stdin}


def dump(client: redis.Redis) -> str:
    """Every key and value of the store, as text."""
    read: dict[str, Any] = {"hash": client.hgetall, "string": client.get, "set": client.smembers,
                            "zset": lambda n: client.zrange(n, 0, -1), "list": lambda n: client.lrange(n, 0, -1),
                            "stream": client.xrange, "none": lambda n: None}  # fmt: skip
    return "\n".join(f"{name}={read[client.type(name)](name)}" for name in client.scan_iter(count=1000))


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """The API with the cluster key; workers are started by the tests (some tamper with queued jobs first)."""
    with made_service(CELLBLOCK_CLUSTER_KEYS=KEY) as svc:
        svc.start_api()
        yield svc


def ensure_worker(svc: Service) -> None:
    if not any(proc.poll() is None for proc in svc.workers):
        svc.start_worker(slots=2)
    svc.wait_ready()


def test_the_store_holds_no_program_input_or_output_in_clear(service: Service) -> None:
    ensure_worker(service)
    source_mark, stdin_mark = uuid.uuid4().hex, uuid.uuid4().hex
    # The output is computed, so it appears nowhere in the source or the input.
    source = f"# {source_mark}\nimport sys\nline = input()\nprint(line[::-1]); print(line.upper(), file=sys.stderr)\n"
    with service.client() as api:
        result = api.post("/v1/jobs", params={"wait": "true"}, json=job(source, stdin_mark))
        assert result.status_code == 200, result.text
        run = result.json()["tests"][0]["run"]
        assert run["stdout"] == stdin_mark[::-1] + "\n" and run["stderr"] == stdin_mark.upper() + "\n"
        events = api.get(f"/v1/jobs/{result.json()['id']}/events").text  # the live events open for the client
        assert stdin_mark[::-1] in events and stdin_mark.upper() in events
    everything = dump(service.redis.client())
    assert result.json()["id"] in everything  # the job is there ...
    for secret in (source_mark, stdin_mark, stdin_mark[::-1], stdin_mark.upper(), "print(line"):
        assert secret not in everything  # ... but nothing of its program, input or output


def test_a_spec_replaced_in_the_store_is_never_run(service: Service) -> None:
    """A queued job's spec replaced by one in clear, or by another job's sealed spec: both refused, never run."""
    r = service.redis.client()
    for proc in service.workers:  # the jobs must still be queued when the store is tampered with
        service.kill_group(proc)
    with service.client() as api:
        ids = [api.post("/v1/jobs", json=job(f"print('job {i}')")).json()["id"] for i in range(3)]
        clear, replayed, untouched = ids
        evil = '{"language": "python3", "files": [{"name": "main.py", "content": "print(\'evil\')"}]}'
        r.hset(job_key(clear), "spec", evil)
        r.hset(job_key(replayed), "spec", r.hget(job_key(untouched), "spec"))  # validly sealed, for another job
        ensure_worker(service)
        wait_until(lambda: all(api.get(f"/v1/jobs/{i}").json()["state"] in ("done", "failed") for i in ids),
                   timeout=60, what="the three jobs")  # fmt: skip
        for job_id in (clear, replayed):
            body = api.get(f"/v1/jobs/{job_id}").json()
            assert body["state"] == "failed" and body["verdict"] == "internal_error", body
            assert "not sealed with a current cluster key" in body["message"] and body["tests"] == [], body
            assert r.hget(job_key(job_id), "attempts") == "1"
        good = api.get(f"/v1/jobs/{untouched}").json()
        assert good["verdict"] == "accepted" and good["tests"][0]["run"]["stdout"] == "job 2\n", good
    log = "".join(p.read_text() for p in service.root.glob("worker-*.log"))
    assert log.count("its stored spec failed verification") == 2, log


def test_a_result_replaced_in_the_store_is_not_passed_on(service: Service) -> None:
    ensure_worker(service)
    r = service.redis.client()
    with service.client() as api:
        real = api.post("/v1/jobs", params={"wait": "true"}, json=job("print('real')")).json()
        other = api.post("/v1/jobs", params={"wait": "true"}, json=job("print('other')")).json()
        assert real["verdict"] == "accepted"
        forged = dict(real, tests=[dict(real["tests"][0], run=dict(real["tests"][0]["run"], stdout="forged\n"))])
        r.hset(job_key(real["id"]), "result", json.dumps(forged))  # a result in clear
        body = api.get(f"/v1/jobs/{real['id']}").json()
        assert body["state"] == "failed" and body["verdict"] == "internal_error", body
        assert "failed verification" in body["message"] and "forged" not in str(body), body
        assert api.get(f"/v1/jobs/{other['id']}").json() == other
        swapped = r.hget(job_key(other["id"]), "result")
        r.hset(job_key(real["id"]), "result", swapped)  # another job's sealed result: refused too
        assert api.get(f"/v1/jobs/{real['id']}").json()["state"] == "failed"


def run_cli(svc: Service, keys: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**svc.env, "CELLBLOCK_CLUSTER_KEYS": keys}
    return subprocess.run([*CELLBLOCK, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_host_with_a_wrong_cluster_key_refuses_to_start(service: Service) -> None:
    """A worker or an API whose keys cannot open the cluster's key check exits at once, naming the setting;
    one that lists the cluster's key second (rotation) starts and re-seals the check with its new first key,
    after which a host with only the old key is refused."""
    r = service.redis.client()
    assert r.exists(CLUSTER_KEY_CHECK)  # left by the first host
    wrong = Fernet.generate_key().decode()
    worker = run_cli(service, wrong, "worker", "--redis", service.redis.url, "--slots", "1")
    assert worker.returncode != 0 and "CELLBLOCK_CLUSTER_KEYS" in worker.stderr, worker.stderr
    assert "Traceback" not in worker.stderr and "ok  " not in worker.stdout  # refused before any self-test
    api = run_cli(service, wrong, "serve", "--redis", service.redis.url, "--port", "1")
    assert api.returncode != 0 and "cannot open what the cluster seals" in api.stderr, api.stderr

    new = Fernet.generate_key().decode()
    before = r.get(CLUSTER_KEY_CHECK)
    proc = subprocess.Popen([*CELLBLOCK, "worker", "--redis", service.redis.url, "--slots", "1", "--name", "rot"],
                            env={**service.env, "CELLBLOCK_CLUSTER_KEYS": f"{new},{KEY}"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: r.get(CLUSTER_KEY_CHECK) != before, timeout=30, what="the key check to be re-sealed")
        assert Fernet(new.encode()).decrypt(r.get(CLUSTER_KEY_CHECK).encode())
    finally:
        service.kill_group(proc)  # type: ignore[arg-type]
        assert proc.stdout is not None
        proc.stdout.close()
    old_only = run_cli(service, KEY, "worker", "--redis", service.redis.url, "--slots", "1")
    assert old_only.returncode != 0 and "CELLBLOCK_CLUSTER_KEYS" in old_only.stderr, old_only.stderr
    r.set(CLUSTER_KEY_CHECK, Fernet(KEY.encode()).encrypt(b"cellblock cluster key check"))  # the others' key again
