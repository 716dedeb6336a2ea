"""API keys against a real API started with auth required (issue 4, item 4, and its bad input: expired or
revoked keys).

Every route of the API is walked with no key, bad keys, a key of the wrong scope and a key of the right scope
(in both headers); then revocation and expiry, the rate limit (429 + Retry-After), the max-running and daily
quotas (also under concurrent submissions, where only an atomic check holds), the `cellblock keys` commands,
and `cellblock serve` refusing an address other machines can reach when no key exists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import CELLBLOCK, Service, free_port, made_service, wait_until

pytestmark = pytest.mark.sandbox

QUICK = {"language": "python3", "files": [{"name": "m.py", "content": "print(6 * 7)"}]}
SLEEP = "import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('slept')\n"


def sleeper(seconds: float) -> dict[str, Any]:
    return {"language": "python3", "files": [{"name": "main.py", "content": SLEEP}], "args": [str(seconds)],
            "limits": {"wall_time_s": seconds + 20}}  # fmt: skip


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CELLBLOCK, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def create_key(env: dict[str, str], *args: str) -> str:
    done = cli(env, "keys", "create", *args)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("cb_") and "\n" not in key
    return key


def key_id(key: str) -> str:
    return key.split("_")[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def token(key: str) -> dict[str, str]:
    return {"X-Auth-Token": key}


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    if response.request.url.path.startswith("/judge0/") and status in (401, 403):
        assert response.content == b"", response.text  # Judge0's `head :unauthorized` / `head :forbidden`
        return {"code": code, "message": "", "field": None}
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["code"] == code, body
    return dict(body["error"])


@dataclass
class Cluster:
    svc: Service
    keys: dict[str, str]  # scope set ("read", "submit", "admin", "read,submit") -> key
    done_job: str = ""
    batch: str = ""

    def client(self) -> httpx.Client:
        return self.svc.client(timeout=30)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with made_service(CELLBLOCK_AUTH="required") as svc:
        keys = {scopes: create_key(svc.env, "--name", f"test {scopes}", "--scopes", scopes)
                for scopes in ("read", "submit", "admin", "read,submit")}  # fmt: skip
        svc.start_api()
        svc.start_worker()
        found = Cluster(svc, keys)
        with found.client() as api:
            wait_until(lambda: len(api.get("/v1/workers", headers=bearer(keys["admin"])).json()["workers"]) == 1,
                       timeout=120, interval=0.2, what="the worker")  # fmt: skip
            done = api.post("/v1/jobs", params={"wait": "true"}, json=QUICK, headers=bearer(keys["admin"]))
            assert done.status_code == 200 and done.json()["tests"][0]["run"]["stdout"] == "42\n", done.text
            found.done_job = done.json()["id"]
            batch = api.post("/v1/batches", json={"jobs": [QUICK]}, headers=bearer(keys["admin"]))
            assert batch.status_code == 202, batch.text
            found.batch = batch.json()["id"]
        yield found


# --- every route × {no key, bad key, wrong scope, good key} ----------------------------------------------------

# (method, OpenAPI path) -> (scope it needs, a key set lacking it, status of a good call)
ROUTES = {
    ("POST", "/v1/jobs"): ("submit", "read", 202),
    ("GET", "/v1/jobs/{job_id}"): ("read", "submit", 200),
    ("DELETE", "/v1/jobs/{job_id}"): ("submit", "read", 202),
    ("GET", "/v1/jobs/{job_id}/events"): ("read", "submit", 200),
    ("POST", "/v1/batches"): ("submit", "read", 202),
    ("GET", "/v1/batches/{batch_id}"): ("read", "submit", 200),
    ("GET", "/v1/languages"): ("read", "submit", 200),
    ("GET", "/v1/workers"): ("read", "submit", 200),
    ("GET", "/metrics"): ("read", "submit", 200),  # unless CELLBLOCK_METRICS_OPEN=true (tests/service/test_metrics.py)
    ("POST", "/v1/keys"): ("admin", "read,submit", 201),
    ("GET", "/v1/keys"): ("admin", "read,submit", 200),
    ("DELETE", "/v1/keys/{key_id}"): ("admin", "read,submit", 200),
    # The Judge0 API (cellblock/api/judge0): X-Auth-Token is the key; X-Auth-User authorization is admin.
    ("POST", "/judge0/submissions"): ("submit", "read", 201),
    ("GET", "/judge0/submissions"): ("admin", "read,submit", 200),
    ("POST", "/judge0/submissions/batch"): ("submit", "read", 201),
    ("GET", "/judge0/submissions/batch"): ("read", "submit", 200),
    ("GET", "/judge0/submissions/{token}"): ("read", "submit", 200),
    ("DELETE", "/judge0/submissions/{token}"): ("admin", "read,submit", 200),
    **{("GET", f"/judge0/{path}"): ("read", "submit", 200) for path in (
        "languages", "languages/all", "languages/{language_id}", "statuses", "about", "version", "isolate",
        "license", "config_info", "workers")},
    ("POST", "/judge0/authenticate"): ("read", "submit", 200),
    ("POST", "/judge0/authorize"): ("admin", "read,submit", 200),
    # The Piston API (cellblock/api/piston); its WebSocket /api/v2/connect: test_piston_websocket_needs_a_key.
    ("GET", "/api/v2/runtimes"): ("read", "submit", 200),
    ("POST", "/api/v2/execute"): ("submit", "read", 200),
}  # fmt: skip
PISTON_QUICK = {"language": "python", "version": "*", "files": [{"content": "print(6 * 7)"}]}
J0_QUICK = {"source_code": "print(6 * 7)", "language_id": 71}
OPEN = {("GET", "/healthz"), ("GET", "/readyz")}


def request_for(cluster: Cluster, api: httpx.Client, route: tuple[str, str]) -> tuple[str, str, dict[str, Any]]:
    """A well-formed request on `route`, with a fresh target where the call would use one up."""
    method, path = route
    admin = bearer(cluster.keys["admin"])
    if route == ("DELETE", "/v1/jobs/{job_id}"):
        target = api.post("/v1/jobs", json=sleeper(30), headers=admin).json()["id"]
        return method, f"/v1/jobs/{target}", {}
    if route == ("DELETE", "/v1/keys/{key_id}"):
        created = api.post("/v1/keys", json={"name": "doomed", "scopes": ["read"]}, headers=admin).json()
        return method, f"/v1/keys/{created['id']}", {}
    if route == ("DELETE", "/judge0/submissions/{token}"):
        done = api.post("/judge0/submissions", params={"wait": "true"}, json=J0_QUICK, headers=admin).json()
        return method, f"/judge0/submissions/{done['token']}", {}
    body = {"/v1/jobs": QUICK, "/v1/batches": {"jobs": [QUICK, QUICK]}, "/v1/keys": {"name": "n", "scopes": ["read"]},
            "/judge0/submissions": J0_QUICK, "/judge0/submissions/batch": {"submissions": [J0_QUICK]},
            "/judge0/authenticate": {}, "/judge0/authorize": {}, "/api/v2/execute": PISTON_QUICK}  # fmt: skip
    job = cluster.done_job
    token = f"{job[:8]}-{job[8:12]}-{job[12:16]}-{job[16:20]}-{job[20:]}"
    url = path.replace("{job_id}", job).replace("{batch_id}", cluster.batch).replace("{token}", token)
    url = url.replace("{language_id}", "71") + ("?tokens=" + token if path == "/judge0/submissions/batch" else "")
    return method, url, ({"json": body[path]} if method == "POST" else {})


def test_the_table_names_every_route(cluster: Cluster) -> None:
    with cluster.client() as api:
        spec = api.get("/openapi.json").json()
    served = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert served - set(ROUTES) - OPEN == set(), "a route without a scope in this test: add it (and its auth)"
    assert set(ROUTES) | OPEN <= served
    assert set(spec["components"]["securitySchemes"]) == {"Bearer", "X-Auth-Token"}


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_needs_a_key_of_its_scope(cluster: Cluster, route: tuple[str, str]) -> None:
    scope, lacking, good_status = ROUTES[route]
    good = cluster.keys[scope]
    forged = good[: good.rindex("_") + 1] + "A" * 43  # the real id, a wrong secret
    bad = ["nope", "cb_0123456789abcdef_" + "B" * 43, forged]
    with cluster.client() as api:
        method, url, extra = request_for(cluster, api, route)

        missing = api.request(method, url, **extra)
        error_of(missing, 401, "unauthenticated")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        basic = api.request(method, url, headers={"Authorization": "Basic dXNlcjpwdw=="}, **extra)
        error_of(basic, 401, "unauthenticated")
        for wrong in bad:
            for headers in (bearer(wrong), token(wrong)):
                refused = api.request(method, url, headers=headers, **extra)
                error_of(refused, 401, "invalid_key")
                assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        for headers in (bearer(cluster.keys[lacking]), token(cluster.keys[lacking])):
            message = error_of(api.request(method, url, headers=headers, **extra), 403, "insufficient_scope")["message"]
            assert scope in message or url.startswith("/judge0/")  # Judge0's 403 has no body to name it

        for headers in (bearer(good), token(good)):
            method, url, extra = request_for(cluster, api, route)
            answer = api.request(method, url, headers=headers, **extra)
            assert answer.status_code == good_status, (headers, answer.text)
            if route[1].endswith("/events"):
                assert "event: result" in answer.text
        if scope != "admin":  # admin implies read and submit
            method, url, extra = request_for(cluster, api, route)
            assert api.request(method, url, headers=token(cluster.keys["admin"]), **extra).status_code == good_status


def test_health_and_docs_need_no_key(cluster: Cluster) -> None:
    with cluster.client() as api:
        assert api.get("/healthz").status_code == 200
        assert api.get("/readyz").status_code == 200  # the worker is live
        assert api.get("/openapi.json").status_code == 200
        docs = api.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_keys_over_http_show_the_key_once(cluster: Cluster) -> None:
    admin = bearer(cluster.keys["admin"])
    with cluster.client() as api:
        created = api.post("/v1/keys", json={"name": "http", "scopes": ["submit"], "rate": "100/min"}, headers=admin)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["rate"] == "100/min" and body["scopes"] == ["submit"] and key_id(body["key"]) == body["id"]
        assert api.post("/v1/jobs", json=QUICK, headers=token(body["key"])).status_code == 202
        error_of(api.get("/v1/languages", headers=token(body["key"])), 403, "insufficient_scope")
        listed = api.get("/v1/keys", headers=admin)
        assert body["key"] not in listed.text and "sha256" not in listed.text
        mine = next(k for k in listed.json() if k["id"] == body["id"])
        assert mine["status"] == "active" and "key" not in mine and mine["jobs_today"] == 1
        error_of(api.post("/v1/keys", json={"name": "x", "scopes": ["root"]}, headers=admin), 422, "validation_failed")
        error_of(api.delete("/v1/keys/0123456789abcdef", headers=admin), 404, "not_found")


def test_the_store_never_holds_a_key(cluster: Cluster) -> None:
    client = cluster.svc.redis.client()
    read: dict[str, Any] = {"hash": client.hgetall, "string": client.get, "set": client.smembers,
                            "zset": lambda n: client.zrange(n, 0, -1), "list": lambda n: client.lrange(n, 0, -1),
                            "stream": client.xrange}  # fmt: skip
    # A key that expires between the scan and its read has type "none": there is nothing left to hold a secret.
    everything = [f"{name}={read[kind](name)}" for name in client.scan_iter(count=1000)
                  if (kind := client.type(name)) != "none"]  # fmt: skip
    dump = "\n".join(everything)
    for key in cluster.keys.values():
        assert key.split("_", 2)[2] not in dump
        assert f"cb:apikey:{key_id(key)}" in dump


# --- revoked, expired -------------------------------------------------------------------------------------------


def test_a_revoked_key_is_refused_at_once(cluster: Cluster) -> None:
    key = create_key(cluster.svc.env, "--name", "leaving", "--scopes", "read")
    with cluster.client() as api:
        assert api.get("/v1/languages", headers=bearer(key)).status_code == 200
        revoked = cli(cluster.svc.env, "keys", "revoke", key_id(key))
        assert revoked.returncode == 0 and key_id(key) in revoked.stdout, revoked.stderr
        for headers in (bearer(key), token(key)):
            error_of(api.get("/v1/languages", headers=headers), 401, "key_revoked")
    listing = cli(cluster.svc.env, "keys", "list").stdout
    row = next(line for line in listing.splitlines() if line.startswith(key_id(key)))
    assert "revoked" in row and key.split("_", 2)[2] not in listing


def test_an_expired_key_is_refused(cluster: Cluster) -> None:
    lifetime_s = 5.0
    created = time.monotonic()
    key = create_key(cluster.svc.env, "--name", "brief", "--scopes", "read", "--expires-in-days",
                     f"{lifetime_s / 86400:.8f}")  # fmt: skip
    with cluster.client() as api:
        assert api.get("/v1/languages", headers=bearer(key)).status_code == 200
        wait_until(lambda: api.get("/v1/languages", headers=bearer(key)).status_code == 401, timeout=20,
                   interval=0.2, what="the key to expire")  # fmt: skip
        assert time.monotonic() - created >= lifetime_s - 1.0
        error_of(api.get("/v1/languages", headers=token(key)), 401, "key_expired")
    listing = cli(cluster.svc.env, "keys", "list").stdout
    assert "expired" in next(line for line in listing.splitlines() if line.startswith(key_id(key)))


# --- rate ---------------------------------------------------------------------------------------------------------


def test_over_the_rate_is_429_with_retry_after(cluster: Cluster) -> None:
    key = create_key(cluster.svc.env, "--name", "chatty", "--scopes", "read", "--rate", "5/s")
    with cluster.client() as api:
        started = time.monotonic()
        answers = [api.get("/v1/languages", headers=bearer(key)) for _ in range(20)]
        elapsed = time.monotonic() - started
        codes = [a.status_code for a in answers]
        assert codes[:5] == [200] * 5, codes  # the bucket starts full: a burst of 5
        assert set(codes) == {200, 429} and codes.count(200) <= 5 + 5 * elapsed + 1, (codes, elapsed)
        limited = next(a for a in answers if a.status_code == 429)
        error_of(limited, 429, "rate_limited")
        retry = int(limited.headers["retry-after"])
        assert retry == 1
        time.sleep(retry)
        assert api.get("/v1/languages", headers=bearer(key)).status_code == 200
        other = cluster.keys["read"]  # rates are per key
        assert api.get("/v1/languages", headers=bearer(other)).status_code == 200


def test_the_rate_holds_under_concurrent_requests(cluster: Cluster) -> None:
    key = create_key(cluster.svc.env, "--name", "swarm", "--scopes", "read", "--rate", "10/s")
    with cluster.client() as api, ThreadPoolExecutor(20) as pool:
        started = time.monotonic()
        codes = list(pool.map(lambda _: api.get("/v1/languages", headers=bearer(key)).status_code, range(60)))
        elapsed = time.monotonic() - started
    assert codes.count(200) >= 10 and codes.count(200) <= 10 + 10 * elapsed + 1, (codes.count(200), elapsed)
    assert codes.count(429) == 60 - codes.count(200)


# --- quotas -------------------------------------------------------------------------------------------------------


def usage(env: dict[str, str], key: str) -> dict[str, Any]:
    import json

    listed = cli(env, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    found: dict[str, Any] = next(k for k in json.loads(listed.stdout) if k["id"] == key_id(key))
    return found


def wait_finished(api: httpx.Client, key: str, ids: list[str]) -> None:
    def finished() -> bool:
        states = [api.get(f"/v1/jobs/{i}", headers=bearer(key)).json()["state"] for i in ids]
        return all(s in ("done", "failed", "cancelled") for s in states)

    wait_until(finished, timeout=60, interval=0.2, what="the jobs to finish")


def test_max_running_refuses_until_jobs_finish(cluster: Cluster) -> None:
    key = create_key(cluster.svc.env, "--name", "busy", "--scopes", "submit,read", "--max-running", "2")
    with cluster.client() as api:
        ids = []
        for _ in range(2):
            accepted = api.post("/v1/jobs", json=sleeper(1.5), headers=bearer(key))
            assert accepted.status_code == 202, accepted.text
            ids.append(accepted.json()["id"])
        over = api.post("/v1/jobs", json=QUICK, headers=bearer(key))
        error_of(over, 429, "max_running_exceeded")
        assert int(over.headers["retry-after"]) >= 1
        error_of(api.post("/v1/batches", json={"jobs": [QUICK] * 3}, headers=bearer(key)), 422, "over_quota")
        assert usage(cluster.svc.env, key)["running"] == 2
        wait_finished(api, key, ids)
        assert usage(cluster.svc.env, key)["running"] == 0  # the worker gave the slots back as each job finished
        again = api.post("/v1/jobs", params={"wait": "true"}, json=QUICK, headers=bearer(key))
        assert again.status_code == 200 and again.json()["verdict"] == "accepted", again.text


def test_max_running_is_atomic_and_cancelled_jobs_give_their_slot_back(cluster: Cluster) -> None:
    key = create_key(cluster.svc.env, "--name", "racer", "--scopes", "submit,read", "--max-running", "3")
    with cluster.client() as api, ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: api.post("/v1/jobs", json=sleeper(20), headers=bearer(key)), range(12)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [202] * 3 + [429] * 9, codes
        ids = [a.json()["id"] for a in answers if a.status_code == 202]
        for job_id in ids:  # the worker has 2 slots: at least one of the three is cancelled while still queued
            assert api.delete(f"/v1/jobs/{job_id}", headers=bearer(key)).status_code == 202
        wait_finished(api, key, ids)
        more = [api.post("/v1/jobs", json=sleeper(20), headers=bearer(key)) for _ in range(3)]
        assert [m.status_code for m in more] == [202] * 3, [m.text for m in more]
        error_of(api.post("/v1/jobs", json=QUICK, headers=bearer(key)), 429, "max_running_exceeded")
        assert usage(cluster.svc.env, key)["running"] == 3
        for answer in more:
            api.delete(f"/v1/jobs/{answer.json()['id']}", headers=bearer(key))


def test_daily_quota(cluster: Cluster) -> None:
    key = create_key(cluster.svc.env, "--name", "daily", "--scopes", "submit", "--daily-jobs", "3")
    with cluster.client() as api:
        assert api.post("/v1/batches", json={"jobs": [QUICK, QUICK]}, headers=bearer(key)).status_code == 202
        assert api.post("/v1/jobs", json=QUICK, headers=bearer(key)).status_code == 202
        over = api.post("/v1/jobs", json=QUICK, headers=bearer(key))
        error_of(over, 429, "daily_quota_exceeded")
        now = datetime.now(UTC)
        to_midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0) - now
        assert abs(int(over.headers["retry-after"]) - to_midnight.total_seconds()) < 30
        error_of(api.post("/v1/batches", json={"jobs": [QUICK] * 4}, headers=bearer(key)), 422, "over_quota")
        assert api.post("/v1/jobs", json=QUICK, headers=bearer(cluster.keys["submit"])).status_code == 202
    assert usage(cluster.svc.env, key)["jobs_today"] == 3  # refused submissions did not count


def test_idempotency_keys_belong_to_one_api_key(cluster: Cluster) -> None:
    first = create_key(cluster.svc.env, "--name", "tenant a", "--scopes", "submit", "--max-running", "1")
    second = create_key(cluster.svc.env, "--name", "tenant b", "--scopes", "submit")
    same = {"Idempotency-Key": "order-1"}
    with cluster.client() as api:
        a1 = api.post("/v1/jobs", json=sleeper(3), headers={**bearer(first), **same})
        a2 = api.post("/v1/jobs", json=sleeper(3), headers={**bearer(first), **same})  # a retry, at max_running
        b1 = api.post("/v1/jobs", json=sleeper(3), headers={**bearer(second), **same})
        assert (a1.status_code, a2.status_code, b1.status_code) == (202, 202, 202), (a1.text, a2.text, b1.text)
        assert a1.json()["id"] == a2.json()["id"] != b1.json()["id"]
        error_of(api.post("/v1/jobs", json=QUICK, headers={**bearer(first), "Idempotency-Key": "order-2"}),
                 429, "max_running_exceeded")  # fmt: skip


# --- the command line -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--scopes", "read,write"], "--scopes"), (["--scopes", "read", "--rate", "5/fortnight"], "--rate"),
     (["--scopes", "read", "--max-running", "0"], "--max-running"), (["--scopes", ""], "--scopes")],
)  # fmt: skip
def test_keys_create_refuses_bad_input(cluster: Cluster, args: list[str], says: str) -> None:
    done = cli(cluster.svc.env, "keys", "create", "--name", "x", *args)
    assert done.returncode == 2 and says in done.stderr and done.stdout == "", (done.returncode, done.stderr)


def test_keys_revoke_unknown(cluster: Cluster) -> None:
    done = cli(cluster.svc.env, "keys", "revoke", "0123456789abcdef")
    assert done.returncode == 2 and "no API key" in done.stderr


# --- cellblock serve: who may start without keys ----------------------------------------------------------------


@pytest.fixture
def bare() -> Iterator[Service]:
    """Redis only: each test starts its own `cellblock serve`."""
    with made_service() as svc:
        yield svc


def serve(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([*CELLBLOCK, "serve", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def listening(port: int) -> bool:
    with contextlib.suppress(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        return True
    return False


def test_serve_refuses_a_reachable_address_without_keys(bare: Service) -> None:
    port = free_port()
    started = time.monotonic()
    done = cli(bare.env, "serve", "--redis", bare.redis.url, "--host", "0.0.0.0", "--port", str(port), timeout=30)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "0.0.0.0" in done.stderr and "--insecure-no-auth" in done.stderr and "cellblock keys create" in done.stderr
    assert time.monotonic() - started < 15 and not listening(port)


def test_serve_with_auth_required_and_no_keys_refuses(bare: Service) -> None:
    done = cli({**bare.env, "CELLBLOCK_AUTH": "required"}, "serve", "--redis", bare.redis.url, timeout=30)
    assert done.returncode == 2 and "CELLBLOCK_AUTH=required" in done.stderr, done.stderr


def test_serve_with_an_unreachable_store_says_so(bare: Service) -> None:
    url = f"unix://{bare.root}/nowhere.sock"
    done = cli(bare.env, "serve", "--redis", url, "--host", "0.0.0.0", "--port", str(free_port()), timeout=30)
    assert done.returncode == 3 and "no such socket" in done.stderr and url in done.stderr, (done.returncode,
                                                                                              done.stderr)  # fmt: skip


def test_insecure_no_auth_serves_a_reachable_address_without_keys(bare: Service) -> None:
    port = free_port()
    log = bare.root / "insecure.log"
    proc = serve(bare.env, "--redis", bare.redis.url, "--host", "0.0.0.0", "--port", str(port), "--insecure-no-auth",
                 log=log)  # fmt: skip
    try:
        wait_until(lambda: listening(port), timeout=30, what="the API")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            assert api.get("/v1/languages").status_code == 200
            error_of(api.post("/v1/keys", json={"name": "n", "scopes": ["admin"]}), 403, "auth_disabled")
        assert "auth is off" in log.read_text()
    finally:
        Service.kill_group(proc, signal.SIGTERM)


def test_a_reachable_address_with_a_key_requires_it(bare: Service) -> None:
    key = create_key(bare.env, "--redis", bare.redis.url, "--name", "ops", "--scopes", "read")
    port = free_port()
    proc = serve(bare.env, "--redis", bare.redis.url, "--host", "0.0.0.0", "--port", str(port), log=bare.root / "a.log")
    try:
        wait_until(lambda: listening(port), timeout=30, what="the API")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            error_of(api.get("/v1/languages"), 401, "unauthenticated")
            assert api.get("/v1/languages", headers=token(key)).status_code == 200
    finally:
        Service.kill_group(proc, signal.SIGTERM)


def test_loopback_by_default_needs_no_key(bare: Service) -> None:
    bare.start_api()
    with bare.client() as api:
        assert api.get("/v1/languages").status_code == 200
        assert api.post("/v1/jobs", json=QUICK).status_code == 202


# --- the embedded server: keys before it runs, refusal without them ---------------------------------------------


def processes_of(data_dir: Path) -> list[str]:
    needle, found = str(data_dir).encode(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                    found.append(entry.name)
    return found


@pytest.fixture
def data_dir() -> Iterator[tuple[Path, dict[str, str]]]:
    root = Path(tempfile.mkdtemp(prefix="cellblock-auth-", dir="/var/tmp"))
    root.chmod(0o711)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(root),
           "CELLBLOCK_DATA_DIR": str(root / "data"), "CELLBLOCK_SHUTDOWN_GRACE_S": "2"}  # fmt: skip
    try:
        yield root / "data", env
    finally:
        for pid in processes_of(root / "data"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def test_embedded_refuses_a_reachable_address_without_keys(data_dir: tuple[Path, dict[str, str]]) -> None:
    data, env = data_dir
    port = free_port()
    started = time.monotonic()
    done = cli(env, "serve", "--host", "0.0.0.0", "--port", str(port), "--slots", "1", timeout=60)
    assert done.returncode == 2 and "--insecure-no-auth" in done.stderr, (done.returncode, done.stderr)
    assert time.monotonic() - started < 30 and not listening(port)
    assert processes_of(data) == [] and not (data / "redis" / "redis.sock").exists()  # its Redis was stopped


@pytest.mark.slow
def test_embedded_keys_are_made_before_serving_and_then_required(data_dir: tuple[Path, dict[str, str]]) -> None:
    data, env = data_dir
    key = create_key(env, "--name", "first", "--scopes", "read")  # no server runs: the private Redis starts for it
    assert processes_of(data) == [] and key_id(key) in cli(env, "keys", "list").stdout  # kept in its AOF
    port = free_port()
    proc = serve(env, "--host", "0.0.0.0", "--port", str(port), "--slots", "1", log=data.parent / "serve.log")
    try:
        wait_until(lambda: listening(port), timeout=60, what="the embedded API")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            error_of(api.get("/v1/languages"), 401, "unauthenticated")
            assert api.get("/v1/languages", headers=bearer(key)).status_code == 200
        second = create_key(env, "--name", "second", "--scopes", "read")  # while it runs: through its socket
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            assert api.get("/v1/languages", headers=bearer(second)).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0


def test_piston_websocket_needs_a_key(cluster: Cluster) -> None:
    """/api/v2/connect authenticates on connect (scope submit): the handshake is refused in our error shape."""
    import json

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = cluster.svc.base_url.replace("http://", "ws://") + "/api/v2/connect"
    for headers, status in (({}, 401), (bearer("nope"), 401), (bearer(cluster.keys["read"]), 403)):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == status
        assert set(json.loads(refused.value.response.body)["error"]) == {"code", "message", "field"}
    with connect(url, additional_headers=token(cluster.keys["submit"]), open_timeout=10) as ws:
        ws.send(json.dumps({"type": "init", **PISTON_QUICK}))
        assert json.loads(ws.recv(timeout=10))["type"] == "runtime"
