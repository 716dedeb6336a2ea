"""The issue's "Bad input" matrix: every user mistake is a 4xx with {"error": {code, message, field}} naming the
field, never a 500, never a traceback, and nothing is accepted."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service

pytestmark = pytest.mark.sandbox

VALID: dict[str, Any] = {"language": "python3", "files": [{"name": "main.py", "content": "print(input())"}]}


def spec(**changes: Any) -> dict[str, Any]:
    """VALID with top-level fields replaced (None deletes the field)."""
    out = {**VALID, "files": [dict(f) for f in VALID["files"]]}
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def files(*entries: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "content": content} for name, content in entries]


def stored_jobs(svc: Service) -> int:
    return sum(1 for key in svc.redis.client().scan_iter("cb:job:*") if not key.endswith(":events"))


def assert_user_error(response: httpx.Response, field: str | None, code: str | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert error["field"] == field, body
    if code is not None:
        assert error["code"] == code, body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return error


# (case id, JSON body, expected field, expected code or None)
JSON_CASES: list[tuple[str, Any, str | None, str | None]] = [
    # wrong types
    ("language-not-a-string", spec(language=5), "language", None),
    ("files-not-a-list", spec(files="main.py"), "files", None),
    ("file-content-not-a-string", spec(files=[{"name": "main.py", "content": 5}]), "files[0].content", None),
    ("file-encoding-unknown", spec(files=[{"name": "m.py", "content": "x", "encoding": "latin1"}]),
     "files[0].encoding", None),
    ("limit-not-a-number", spec(limits={"cpu_time_s": "fast"}), "limits.cpu_time_s", None),
    ("stdin-not-a-string", spec(stdin=5), "stdin", None),
    ("args-not-a-list", spec(args="-v"), "args", None),
    ("network-not-a-bool", spec(network=[]), "network", None),
    ("test-stdin-not-a-string", spec(tests=[{"stdin": "1"}, {"stdin": 2}]), "tests[1].stdin", None),
    ("checker-kind-unknown", spec(checker={"kind": "regex"}), "checker", None),
    ("body-is-a-list", [VALID], None, None),
    ("body-is-a-string", "print(1)", None, None),
    # unknown fields
    ("unknown-top-level-field", spec(lang="python3"), "lang", "unknown_field"),
    ("unknown-limit", spec(limits={"cpu": 1}), "limits.cpu", "unknown_field"),
    ("unknown-file-field", spec(files=[{"name": "m.py", "content": "x", "mode": 755}]), "files[0].mode",
     "unknown_field"),
    ("unknown-test-field", spec(tests=[{"stdin": ""}, {"stdin": "", "output": "x"}]), "tests[1].output",
     "unknown_field"),
    # missing fields
    ("language-missing", spec(language=None), "language", "missing_field"),
    ("files-missing", spec(files=None), "files", "missing_field"),
    ("file-content-missing", spec(files=[{"name": "main.py"}]), "files[0].content", "missing_field"),
    # unknown language
    ("checker-language-unknown", spec(checker={"kind": "custom", "language": "klingon", "source": "x"}),
     "checker.language", None),
    # limits above the maxima (defaults: run 60 s CPU, 120 s wall, 4096 MiB; compile 120 s CPU) or not positive
    ("cpu-above-maximum", spec(limits={"cpu_time_s": 61}), "limits.cpu_time_s", "limit_above_maximum"),
    ("wall-above-maximum", spec(limits={"wall_time_s": 121}), "limits.wall_time_s", "limit_above_maximum"),
    ("memory-above-maximum", spec(limits={"memory_mib": 4097}), "limits.memory_mib", "limit_above_maximum"),
    ("huge-memory", spec(limits={"memory_mib": 10**30}), "limits.memory_mib", None),
    ("compile-cpu-above-maximum", spec(compile_limits={"cpu_time_s": 121}), "compile_limits.cpu_time_s",
     "limit_above_maximum"),
    ("cpu-zero", spec(limits={"cpu_time_s": 0}), "limits.cpu_time_s", None),
    ("processes-negative", spec(limits={"processes": -1}), "limits.processes", None),
    # sources
    ("no-files", spec(files=[]), "files", None),
    ("empty-source", spec(files=files(("main.py", ""))), "files[0].content", None),
    ("blank-source", spec(files=files(("main.py", " \n\t\n"))), "files[0].content", None),
    ("bad-base64", spec(files=[{"name": "main.py", "content": "!!not base64!!", "encoding": "base64"}]),
     "files[0].content", None),
    ("source-over-max-source-kib", spec(files=files(("main.py", "#" + "x" * (1024 * 1024 + 10)))), "files", None),
    # file names
    ("dotdot-name", spec(files=files(("main.py", "print(1)"), ("../escape.txt", "x"))), "files[1].name", None),
    ("absolute-name", spec(files=files(("main.py", "print(1)"), ("/etc/passwd", "x"))), "files[1].name", None),
    ("nul-in-name", spec(files=files(("main.py", "print(1)"), ("a\u0000b", "x"))), "files[1].name", None),
    ("empty-name", spec(files=files(("main.py", "print(1)"), ("", "x"))), "files[1].name", None),
    ("dot-name", spec(files=files(("main.py", "print(1)"), ("sub/.", "x"))), "files[1].name", None),
    ("glob-name", spec(files=files(("main.py", "print(1)"), ("*.txt", "x"))), "files[1].name", None),
    ("long-name", spec(files=files(("main.py", "print(1)"), ("a" * 300, "x"))), "files[1].name", None),
    ("duplicate-name", spec(files=files(("main.py", "print(1)"), ("d.txt", "1"), ("d.txt", "2"))),
     "files[2].name", None),
    ("main-file-dotdot", spec(files=files(("../main.py", "print(1)"))), "files[0].name", None),
    ("output-glob-escapes", spec(output_files=["../*"]), "output_files[0]", None),
    # other field rules
    ("too-many-tests", spec(tests=[{"stdin": ""}] * 1001), "tests", None),
    ("stdin-and-tests", spec(stdin="1", tests=[{"stdin": "2"}]), "stdin", None),
    ("network-not-allowed", spec(network=True), "network", None),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field", "code"), [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES])
def test_a_bad_job_is_refused_naming_its_field(
    api: httpx.Client, service: Service, body: Any, field: str | None, code: str | None
) -> None:
    before = stored_jobs(service)
    assert_user_error(api.post("/v1/jobs", json=body), field, code)
    assert_user_error(api.post("/v1/jobs", params={"wait": "true"}, json=body), field, code)
    assert stored_jobs(service) == before, "a refused job was stored"


def test_an_unknown_language_lists_the_known_ones_and_the_closest(api: httpx.Client) -> None:
    error = assert_user_error(api.post("/v1/jobs", json=spec(language="pyhton3")), "language", "unknown_language")
    assert "python3" in error["message"]
    for known in ("bash", "c", "javascript"):
        assert known in error["message"]
    assert "swift" not in error["message"]  # a Judge0 and Piston language Debian 12 does not package


def test_the_control_case_is_accepted(api: httpx.Client) -> None:
    """The matrix above is only meaningful if VALID itself is accepted."""
    response = api.post("/v1/jobs", params={"wait": "true"}, json=spec(stdin="ok"))
    assert response.status_code == 200 and response.json()["tests"][0]["run"]["stdout"] == "ok\n"
    encoded = base64.b64encode(b"print('b64')").decode()
    b64 = spec(files=[{"name": "main.py", "content": encoded, "encoding": "base64"}])
    assert api.post("/v1/jobs", params={"wait": "true"}, json=b64).json()["tests"][0]["run"]["stdout"] == "b64\n"


# Bodies that are not JSON at all: no field to name, but the same shape and a code that says so.
RAW_CASES: list[tuple[str, bytes]] = [
    ("truncated-json", b'{"language": "python3", "files": ['),
    ("not-json", b"language=python3"),
    ("trailing-comma", b'{"language": "python3",}'),
    ("non-utf8", b'{"language": "python3", "files": [{"name": "m.py", "content": "\xff\xfe"}]}'),
    ("latin1", '{"language": "python3", "files": [{"name": "m.py", "content": "caf\u00e9"}]}'.encode("latin-1")),
]


@pytest.mark.parametrize("body", [c[1] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_a_body_that_is_not_json_is_malformed_json(api: httpx.Client, service: Service, body: bytes) -> None:
    before = stored_jobs(service)
    response = api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    error = assert_user_error(response, None, "malformed_json")
    assert "JSON" in error["message"] or "UTF-8" in error["message"]
    assert stored_jobs(service) == before


@pytest.mark.parametrize(
    "body",
    [b"[" * 100000 + b"]" * 100000, b'{"language": "python3", "limits": {"memory_mib": ' + b"9" * 5000 + b"}}", b""],
    ids=["nested-100000-deep", "5000-digit-number", "empty-body"],
)
def test_a_pathological_body_is_a_4xx_not_a_crash(api: httpx.Client, body: bytes) -> None:
    response = api.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert_user_error(response, None)
    assert api.get("/healthz").status_code == 200


def test_an_oversize_body_is_413(api: httpx.Client, service: Service) -> None:
    before = stored_jobs(service)
    big = spec(files=files(("main.py", "#" + "x" * (16 * 1024 * 1024 + 10))))  # default cap: 16 MiB
    response = api.post("/v1/jobs", json=big)
    assert response.status_code == 413
    assert_user_error(response, None, "body_too_large")
    assert stored_jobs(service) == before


def test_a_bad_query_parameter_is_named(api: httpx.Client) -> None:
    assert_user_error(api.post("/v1/jobs", params={"wait": "maybe"}, json=VALID), "wait")


@pytest.mark.parametrize("bad_id", ["not-a-job", "1234", "g" * 32, "A" * 31, "0" * 33, "%20"])
@pytest.mark.parametrize("route", ["GET /v1/jobs/{}", "GET /v1/jobs/{}/events", "DELETE /v1/jobs/{}",
                                   "GET /v1/batches/{}"])  # fmt: skip
def test_a_malformed_id_is_422_naming_id(api: httpx.Client, route: str, bad_id: str) -> None:
    method, path = route.split()
    response = api.request(method, path.format(bad_id))
    assert response.status_code == 422
    assert_user_error(response, "id")


@pytest.mark.parametrize("route", ["GET /v1/jobs/{}", "GET /v1/jobs/{}/events", "DELETE /v1/jobs/{}",
                                   "GET /v1/batches/{}"])  # fmt: skip
def test_an_unknown_id_is_404_naming_id(api: httpx.Client, route: str) -> None:
    method, path = route.split()
    response = api.request(method, path.format("0123456789abcdef" * 2))
    assert response.status_code == 404
    assert_user_error(response, "id", "not_found")


def test_cancel_of_a_finished_job_is_409_naming_id(api: httpx.Client) -> None:
    done = api.post("/v1/jobs", params={"wait": "true"}, json=spec(stdin="x")).json()
    response = api.delete(f"/v1/jobs/{done['id']}")
    assert response.status_code == 409
    assert_user_error(response, "id")


def test_an_unknown_route_and_method_keep_the_error_shape(api: httpx.Client) -> None:
    assert api.get("/v1/nope").status_code == 404
    assert_user_error(api.get("/v1/nope"), None, "not_found")
    response = api.put("/v1/jobs", json=VALID)
    assert response.status_code == 405
    assert_user_error(response, None)
