"""The Piston v2 REST facade (issue 5, item 2) against a real API + worker + Redis and the real sandbox.

Fields in Piston's units, stage results and statuses (RE/SG/TO/OL/EL), interleaved `output`, the bodies real
clients send (JSON, text/plain, no type, forms), Piston's 400/415 messages, and every applicable Piston
corpus test (`piston_tests.json`) run through /api/v2/execute.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conformance import corpus
from tests.service.conftest import Service

pytestmark = pytest.mark.sandbox

PLAN = corpus.collect("piston_tests")


@pytest.fixture(scope="module")
def svc(service: Service) -> Service:
    """The shared module service (conftest: Redis, a 2-slot worker, webhooks, the API)."""
    return service


@pytest.fixture
def api(svc: Service) -> Iterator[httpx.Client]:
    with svc.client(timeout=120) as client:
        yield client


def py(source: str, **fields: Any) -> dict[str, Any]:
    return {"language": "python", "version": "3.x", "files": [{"name": "main.py", "content": source}], **fields}


def execute(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/api/v2/execute", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_runtimes_are_the_live_toolchains(api: httpx.Client) -> None:
    runtimes = api.get("/api/v2/runtimes").json()
    ours = {lang["piston_name"]: lang for lang in api.get("/v1/languages").json() if lang["piston_name"]}
    assert {rt["language"] for rt in runtimes} == set(ours)
    python = next(rt for rt in runtimes if rt["language"] == "python")
    assert python["version"] == ours["python"]["version"] and python["version"].startswith("3.")
    assert set(python["aliases"]) == {"py", "py3", "python3"}
    assert set(python) == {"language", "version", "aliases"}


def test_a_run_in_pistons_shape(api: httpx.Client) -> None:
    answer = execute(api, py("import sys\nprint(input()[::-1], sys.argv[1:])", stdin="olleh", args=["a", "b c"]))
    version = next(rt["version"] for rt in api.get("/api/v2/runtimes").json() if rt["language"] == "python")
    assert answer["language"] == "python" and answer["version"] == version
    assert "compile" not in answer
    run = answer["run"]
    assert run["stdout"] == "hello ['a', 'b c']\n" and run["stderr"] == "" and run["output"] == run["stdout"]
    assert (run["code"], run["signal"], run["status"], run["message"]) == (0, None, None, None)
    assert isinstance(run["cpu_time"], int) and isinstance(run["wall_time"], int)
    assert run["wall_time"] >= run["cpu_time"] >= 1 and run["memory"] > 1024 * 1024  # ms; bytes


def test_output_interleaves_stdout_and_stderr_as_produced(api: httpx.Client) -> None:
    source = ("import sys, time\nfor i in range(3):\n    print('out', i, flush=True)\n    time.sleep(0.1)\n"
              "    print('err', i, file=sys.stderr, flush=True)\n    time.sleep(0.1)\n")  # fmt: skip
    run = execute(api, py(source))["run"]
    assert run["stdout"] == "out 0\nout 1\nout 2\n" and run["stderr"] == "err 0\nerr 1\nerr 2\n"
    assert run["output"] == "out 0\nerr 0\nout 1\nerr 1\nout 2\nerr 2\n"


def test_stdin_gets_a_trailing_newline_as_upstream(api: httpx.Client) -> None:
    run = execute(api, py("import sys\nprint(repr(sys.stdin.read()))", stdin="x"))["run"]
    assert run["stdout"] == "'x\\n'\n"


def test_files_in_every_encoding_and_directories(api: httpx.Client) -> None:
    main = "print(open('lib/data.bin','rb').read(), open('notes.txt').read())"
    body = {"language": "py", "version": "*", "files": [
        {"name": "main.py", "content": base64.b64encode(main.encode()).decode(), "encoding": "base64"},
        {"name": "lib/data.bin", "content": "00ff41", "encoding": "hex"},
        {"name": "notes.txt", "content": "héllo"},
    ]}  # fmt: skip
    assert execute(api, body)["run"]["stdout"] == "b'\\x00\\xffA' héllo\n"


@pytest.mark.parametrize("kind", ["text/plain;charset=UTF-8", None, "application/json; charset=utf-8"])
def test_json_under_any_content_type_clients_send(api: httpx.Client, kind: str | None) -> None:
    headers = {"Content-Type": kind} if kind else {}
    body = json.dumps(py("print(42)")).encode()
    response = api.post("/api/v2/execute", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["run"]["stdout"] == "42\n", response.text


def test_form_bodies_as_pistonapi_sends_them(api: httpx.Client) -> None:
    form = {"language": "python", "version": "3", "files": "import sys\nprint(sys.argv[1:], input())",
            "stdin": "in", "args": ["x", "y"], "timeout": "10000"}  # fmt: skip
    response = api.post("/api/v2/execute", data=form)
    assert response.status_code == 200, response.text
    assert response.json()["run"]["output"] == "['x', 'y'] in\n"
    bracketed = "language=c&version=*&files[0][name]=m.c&files[0][content]=int+main(){return+3;}&run_timeout=2000"
    response = api.post("/api/v2/execute", content=bracketed,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert response.status_code == 200 and response.json()["run"]["code"] == 3, response.text


@pytest.mark.parametrize(
    ("source", "fields", "status", "signal", "code"),
    [
        ("import sys\nsys.exit(3)", {}, "RE", None, 3),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", {}, "SG", "SIGSEGV", None),
        ("import time\ntime.sleep(5)", {"run_timeout": 400}, "TO", "SIGKILL", None),
        ("while True: pass", {"run_cpu_time": 300}, "TO", "SIGKILL", None),
        ("b = bytearray(300 << 20)\nprint(len(b))", {"run_memory_limit": 64_000_000}, "SG", "SIGKILL", None),
        ("import sys\nsys.stdout.write('x' * (3 << 20))", {}, "OL", "SIGKILL", None),
        ("import sys\nsys.stderr.write('x' * (3 << 20))", {}, "EL", "SIGKILL", None),
    ],
    ids=["RE", "SG", "TO-wall", "TO-cpu", "memory", "OL", "EL"],
)
def test_statuses(api: httpx.Client, source: str, fields: dict[str, Any], status: str, signal: str | None,
                  code: int | None) -> None:  # fmt: skip
    run = execute(api, py(source, **fields))["run"]
    assert (run["status"], run["signal"], run["code"]) == (status, signal, code), run
    assert run["message"]
    if "run_timeout" in fields:
        assert run["wall_time"] >= fields["run_timeout"]
    if "run_cpu_time" in fields:
        assert run["cpu_time"] >= fields["run_cpu_time"]


def test_compiled_language_has_a_compile_stage(api: httpx.Client) -> None:
    answer = execute(api, {"language": "gcc", "version": "12", "files": [
        {"name": "main.c", "content": '#include <stdio.h>\nint main(){puts("hi");return 0;}'}]})  # fmt: skip
    assert answer["language"] == "c"
    assert answer["compile"]["code"] == 0 and answer["compile"]["status"] is None
    assert answer["run"]["stdout"] == "hi\n"


def test_a_failed_compile_is_copied_into_run(api: httpx.Client) -> None:
    answer = execute(api, {"language": "c", "version": "*", "files": [{"content": "int main( { nope"}]})
    assert answer["compile"]["status"] == "RE" and answer["compile"]["code"] != 0
    assert "error" in answer["compile"]["stderr"]
    assert answer["run"] == answer["compile"]


BAD = [
    ({}, 400, "language is required as a string"),
    ({"language": 3, "version": "*", "files": []}, 400, "language is required as a string"),
    ({"language": "python", "files": []}, 400, "version is required as a string"),
    ({"language": "python", "version": "*"}, 400, "files is required as an array"),
    ({"language": "python", "version": "*", "files": "x"}, 400, "files is required as an array"),
    ({"language": "python", "version": "*", "files": [{"name": "a"}]}, 400, "files[0].content is required as a string"),
    ({"language": "swift", "version": "*", "files": [{"content": "x"}]}, 400, "swift-* runtime is unknown"),
    ({"language": "python", "version": "2.x", "files": [{"content": "x"}]}, 400, "python-2.x runtime is unknown"),
    ({"language": "python", "version": "*", "files": []}, 400, "files must include at least one utf8 encoded file"),
    ({"language": "python", "version": "*", "files": [{"content": "eA==", "encoding": "base64"}]}, 400,
     "files must include at least one utf8 encoded file"),
    ({"language": "python", "version": "*", "files": [{"content": "x"}, {"content": "zz", "encoding": "hex"}]},
     400, "files[1].content is not valid hex"),
    ({"language": "python", "version": "*", "files": [{"content": "x"}, {"content": "!!", "encoding": "base64"}]},
     400, "files[1].content is not valid base64"),
    ({"language": "python", "version": "*", "files": [{"content": "x"}, {"content": "x", "encoding": "utf16"}]},
     400, "files[1].encoding must be one of utf8, base64, hex"),
    ({"language": "python", "version": "*", "files": [{"content": "x"}], "run_timeout": "fast"}, 400,
     "If specified, run_timeout must be a number"),
    ({"language": "python", "version": "*", "files": [{"content": "x"}], "run_timeout": 10**9}, 400,
     "run_timeout cannot exceed the configured limit of 120000"),
    ({"language": "python", "version": "*", "files": [{"content": "x"}], "compile_cpu_time": 10**9}, 400,
     "compile_cpu_time cannot exceed the configured limit of 120000"),
    ({"language": "python", "version": "*", "files": [{"content": "x"}], "run_memory_limit": 10**12}, 400,
     f"run_memory_limit cannot exceed the configured limit of {4096 << 20}"),
    ({"language": "python", "version": "*", "files": [{"content": "x"}], "run_cpu_time": -5}, 400,
     "run_cpu_time must be non-negative"),
    ({"language": "python", "version": "*", "files": [{"content": "x", "name": "../x"}]}, 400, None),
    ({"language": "python", "version": "*", "files": [{"content": " "}]}, 400, None),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_pistons_validation_errors(api: httpx.Client, body: dict[str, Any], status: int, message: str | None) -> None:
    response = api.post("/api/v2/execute", json=body)
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"message"} and answer["message"], answer
    if message is not None:
        assert answer["message"] == message
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("content", "kind", "status", "message"),
    [
        (b"<xml/>", "application/xml", 415, "requests must be of type application/json"),
        (b"{not json", "application/json", 400, "the request body is not valid JSON"),
        (b"{not json", "text/plain", 400, "the request body is not valid JSON"),
        (b"\xff\xfe", "application/json", 400, "the request body is not UTF-8"),
        (b"[1, 2]", "application/json", 400, "language is required as a string"),
    ],
)
def test_bodies_that_are_not_json(api: httpx.Client, content: bytes, kind: str, status: int, message: str) -> None:
    response = api.post("/api/v2/execute", content=content, headers={"Content-Type": kind})
    assert (response.status_code, response.json()) == (status, {"message": message})


@pytest.mark.parametrize("case", PLAN.applicable(), ids=corpus.case_id)
def test_piston_corpus_through_the_piston_api(api: httpx.Client, case: corpus.Case) -> None:
    """Piston's CI rule: the run's output contains OK (with the corpus's own limits, in Piston's units)."""
    assert case.spec is not None
    lang = corpus.cached_registry().get(case.spec.language)
    test = case.spec.tests[0]
    body = {"language": lang.piston_name, "version": "*", "stdin": test.stdin, "args": test.args or [],
            "files": [{"name": f.name, "content": f.content} for f in case.spec.files],
            "run_timeout": 10000, "run_cpu_time": 5000,
            "compile_timeout": 40000, "compile_cpu_time": 20000}  # fmt: skip
    answer = execute(api, body)
    assert answer["run"]["status"] is None and "OK" in answer["run"]["output"], answer
