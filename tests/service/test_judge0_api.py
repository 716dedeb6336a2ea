"""The Judge0 CE 1.13.1 API under /judge0, through a real API, worker, webhook sender and Redis (issue 5, item 1).

Wire formats (fields, base64 wrapping, decimals, timestamps), every status we map, the features the engine
gained for it (number_of_runs, redirect_stderr_to_stdout, additional_files, language 89), batches, listing,
delete and the PUT callback. Bad input is in test_judge0_bad_input.py.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from cellblock.api.judge0.render import ALL_FIELDS, DEFAULT_FIELDS
from tests.service.conftest import Service

pytestmark = pytest.mark.sandbox

TOKEN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DECIMAL = re.compile(r"^\d+\.\d{1,3}$")


@pytest.fixture(scope="module")
def j0(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url + "/judge0", timeout=60) as client:
        yield client


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def zipped(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return b64(buffer.getvalue())


def finished(j0: httpx.Client, token: str, **params: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        answer = j0.get(f"/submissions/{token}", params={"fields": "*", **params})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["status"]["id"] > 2:
            return body
        time.sleep(0.05)
    raise AssertionError(f"submission {token} did not finish")


def run(j0: httpx.Client, **submission: Any) -> dict[str, Any]:
    answer = j0.post("/submissions", params={"wait": "true", "fields": "*"}, json=submission)
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


# --- informational routes --------------------------------------------------------------------------------------


def test_about_statuses_and_config_info(j0: httpx.Client) -> None:
    assert j0.get("/about").json()["version"] == "1.13.1"
    assert j0.get("/version").text == "1.13.1"
    statuses = j0.get("/statuses").json()
    assert [s["id"] for s in statuses] == list(range(1, 15))
    assert statuses[10] == {"id": 11, "description": "Runtime Error (NZEC)"}
    config = j0.get("/config_info").json()
    assert len(config) == 39
    import judge0.base_types

    assert set(config) == set(judge0.base_types.Config.model_fields)
    assert (config["cpu_time_limit"], config["max_cpu_time_limit"], config["memory_limit"]) == (2.0, 60.0, 262144)
    assert config["allow_enable_network"] is False and config["max_number_of_runs"] == 20


def test_languages_carry_ce_ids_and_our_versions(j0: httpx.Client) -> None:
    languages = {row["id"]: row["name"] for row in j0.get("/languages").json()}
    assert re.fullmatch(r"Python \(3\.\d+\.\d+\)", languages[71])
    assert languages[89] == "Multi-file program"
    assert languages[48] == languages[50] and languages[50].startswith("C (GCC 12")
    assert 70 not in languages and 83 not in languages  # Python 2, Swift: not in Debian 12
    every = j0.get("/languages/all").json()
    assert [row["name"] for row in every] == sorted(row["name"] for row in every)
    assert all(row["is_archived"] is False for row in every)
    c = j0.get("/languages/50").json()
    assert c["source_file"] == "main.c" and "%s" in c["compile_cmd"] and c["run_cmd"] == "./main"
    assert j0.get("/languages/71").json()["compile_cmd"] is None
    missing = j0.get("/languages/4242")
    assert (missing.status_code, missing.json()) == (404, {"status": 404, "error": "Not Found"})


def test_workers_report_queues(j0: httpx.Client) -> None:
    rows = {row["queue"]: row for row in j0.get("/workers").json()}
    assert set(rows["lang.python3"]) == {"queue", "size", "available", "idle", "working", "paused", "failed"}
    assert rows["lang.python3"]["available"] == 2
    assert j0.post("/authenticate").status_code == 200 and j0.post("/authorize").status_code == 200


# --- create and get -------------------------------------------------------------------------------------------


def test_create_then_get_with_default_and_all_fields(j0: httpx.Client) -> None:
    created = j0.post("/submissions", json={"source_code": "print(input()[::-1])", "language_id": 71,
                                            "stdin": "abc"})  # fmt: skip
    assert created.status_code == 201 and set(created.json()) == {"token"}
    token = created.json()["token"]
    assert TOKEN.match(token)
    body = finished(j0, token)
    assert list(body) == list(ALL_FIELDS)
    assert (body["stdout"], body["stderr"], body["status"]) == ("cba\n", None, {"id": 3, "description": "Accepted"})
    assert body["source_code"] == "print(input()[::-1])" and body["stdin"] == "abc" and body["language_id"] == 71
    assert STAMP.match(body["created_at"]) and STAMP.match(body["finished_at"])
    assert DECIMAL.match(body["time"]) and DECIMAL.match(body["wall_time"]) and body["cpu_time_limit"] == "2.0"
    assert isinstance(body["memory"], int) and body["memory"] > 0 and body["exit_code"] == 0
    default = j0.get(f"/submissions/{token}").json()
    assert list(default) == list(DEFAULT_FIELDS)
    some = j0.get(f"/submissions/{token}", params={"fields": "stdout, status_id,token"}).json()
    assert some == {"stdout": "cba\n", "status_id": 3, "token": token}


def test_base64_output_is_wrapped_at_60_columns_like_ruby(j0: httpx.Client) -> None:
    text = "x" * 100 + "\n"
    answer = j0.post("/submissions", params={"wait": "true", "base64_encoded": "true"},
                     json={"source_code": b64(f"print({'x' * 100!r})"), "language_id": 71})  # fmt: skip
    assert answer.status_code == 201, answer.text
    stdout = answer.json()["stdout"]
    lines = stdout.split("\n")
    assert stdout.endswith("\n") and all(len(line) == 60 for line in lines[:-2]) and lines[-1] == ""
    assert unb64(stdout) == text.encode()
    assert answer.json()["stderr"] is None and answer.json()["compile_output"] is None


def test_output_that_is_not_utf8_needs_base64(j0: httpx.Client) -> None:
    source = "import sys; sys.stdout.buffer.write(bytes([0xff, 0xfe]))"
    answer = j0.post("/submissions", params={"wait": "true"}, json={"source_code": source, "language_id": 71})
    assert answer.status_code == 201
    message = (
        "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter"
    )
    assert answer.json() == {"error": message, "token": answer.json()["token"]}
    token = answer.json()["token"]
    plain = j0.get(f"/submissions/{token}")
    assert (plain.status_code, plain.json()) == (400, {"error": message})
    assert unb64(j0.get(f"/submissions/{token}", params={"base64_encoded": "true"}).json()["stdout"]) == b"\xff\xfe"


def test_parameters_may_come_from_the_query_string(j0: httpx.Client) -> None:
    answer = j0.post("/submissions", params={"wait": "true", "language_id": "71", "source_code": "print(7 * 6)"})
    assert answer.status_code == 201 and answer.json()["stdout"] == "42\n"


def test_a_v1_job_reads_through_judge0(service: Service, j0: httpx.Client) -> None:
    with service.client() as api:
        job = api.post("/v1/jobs", params={"wait": "true"},
                       json={"language": "bash", "files": [{"name": "s.sh", "content": "echo v1"}]}).json()  # fmt: skip
    hex_id = job["id"]
    token = f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"
    body = j0.get(f"/submissions/{token}", params={"fields": "stdout,language_id,status"}).json()
    assert body == {"stdout": "v1\n", "language_id": 46, "status": {"id": 3, "description": "Accepted"}}


# --- statuses -------------------------------------------------------------------------------------------------

KILL = "import os, signal\nos.kill(os.getpid(), signal.{})\n"
CASES = [  # (submission, status id, check of the finished submission)
    ({"source_code": "print(1)", "expected_output": "2"}, 4, lambda s: s["stdout"] == "1\n"),
    ({"source_code": "while True: pass", "cpu_time_limit": 0.5}, 5, lambda s: s["message"] == "Time limit exceeded"),
    ({"source_code": "import time; time.sleep(5)", "wall_time_limit": 1}, 5,
     lambda s: s["message"] == "Time limit exceeded (wall clock)"),
    ({"source_code": "int main( {", "language_id": 50}, 6,
     lambda s: "error" in s["compile_output"] and s["stdout"] is None and s["time"] is None),
    ({"source_code": KILL.format("SIGSEGV")}, 7, lambda s: s["exit_signal"] == 11),
    ({"source_code": "print('x' * 2_000_000)"}, 8, lambda s: s["exit_signal"] == 25),
    ({"source_code": KILL.format("SIGFPE")}, 9, lambda s: s["message"] == "Caught fatal signal 8"),
    ({"source_code": "import os; os.abort()"}, 10, lambda s: s["exit_signal"] == 6),
    ({"source_code": "import sys; sys.exit(3)"}, 11,
     lambda s: (s["exit_code"], s["message"]) == (3, "Exited with error status 3")),
    ({"source_code": "x = bytearray(400 << 20)", "memory_limit": 65536}, 11,
     lambda s: (s["exit_code"], s["message"]) == (137, "Exited with error status 137")),
    ({"source_code": KILL.format("SIGUSR1")}, 12, lambda s: s["exit_signal"] == 10),
]  # fmt: skip


def test_every_verdict_maps_to_judge0s_status(j0: httpx.Client) -> None:
    submissions = [{"language_id": 71, **submission} for submission, _, _ in CASES]
    created = j0.post("/submissions/batch", json={"submissions": submissions})
    assert created.status_code == 201, created.text
    tokens = [row["token"] for row in created.json()]
    results = [finished(j0, token) for token in tokens]
    for (submission, status, check), result in zip(CASES, results, strict=True):
        assert result["status"]["id"] == status, (submission, result)
        assert check(result), (submission, result)
    both = j0.get("/submissions/batch", params={"tokens": f"{tokens[0]},{tokens[1]}", "fields": "token,status_id"})
    assert both.json() == {"submissions": [{"token": tokens[0], "status_id": 4}, {"token": tokens[1], "status_id": 5}]}


# --- the features Judge0 has and the engine gained ------------------------------------------------------------


def test_compiler_options_and_command_line_arguments(j0: httpx.Client) -> None:
    source = (
        '#include <stdio.h>\nint main(int c, char **v) { printf("%d", X); '
        'for (int i = 1; i < c; i++) printf("|%s", v[i]); }'
    )
    body = run(j0, source_code=source, language_id=50, compiler_options="-DX=42",
               command_line_arguments="a 'b c' d;e")  # fmt: skip
    assert body["status"]["id"] == 3 and body["stdout"] == "42|a|b c|de", body
    assert body["compiler_options"] == "-DX=42" and body["command_line_arguments"] == "a 'b c' de"


def test_redirect_stderr_to_stdout_keeps_the_order(j0: httpx.Client) -> None:
    source = (
        "import sys\nfor i in range(3):\n    print(i, flush=True)\n    print('e', i, file=sys.stderr, flush=True)\n"
    )
    body = run(j0, source_code=source, language_id=71, redirect_stderr_to_stdout=True)
    assert body["stdout"] == "0\ne 0\n1\ne 1\n2\ne 2\n" and body["stderr"] is None
    assert run(j0, source_code=source, language_id=71)["stderr"] == "e 0\ne 1\ne 2\n"


COUNTER = "import os\nn = len(open('runs').read()) + 1 if os.path.exists('runs') else 1\nopen('runs', 'a').write('x')\n"


def test_number_of_runs_runs_again_and_stops_at_the_first_failure(j0: httpx.Client) -> None:
    body = run(j0, source_code=COUNTER + "print(n)", language_id=71, number_of_runs=3)
    assert (body["stdout"], body["status"]["id"], body["number_of_runs"]) == ("3\n", 3, 3)
    failing = run(j0, source_code=COUNTER + "print(n)\nif n == 2: raise SystemExit(1)", language_id=71,
                  number_of_runs=5)  # fmt: skip
    assert (failing["stdout"], failing["status"]["id"]) == ("2\n", 11)


def test_additional_files_sit_next_to_the_source(j0: httpx.Client) -> None:
    files = zipped({"data.txt": "seven\n", "lib/helper.py": "def twice(x):\n    return 2 * x\n"})
    source = (
        "import sys; sys.path.insert(0, 'lib')\nfrom helper import twice\nprint(twice(open('data.txt').read().strip()))"
    )
    body = run(j0, source_code=source, language_id=71, additional_files=files)
    assert body["stdout"] == "sevenseven\n", body
    assert body["additional_files"] == files


def test_multi_file_program_runs_its_compile_and_run_scripts(j0: httpx.Client) -> None:
    files = zipped({"compile": "gcc -O2 -o prog main.c util.c\n", "run": "./prog \"$@\"\n",
                    "main.c": '#include <stdio.h>\nint twice(int);\nint main(void){int x; scanf("%d",&x); '
                              'printf("%d\\n", twice(x));}\n',
                    "util.c": "int twice(int x) { return 2 * x; }\n"})  # fmt: skip
    body = run(j0, language_id=89, additional_files=files, stdin="21", expected_output="42")
    assert body["status"]["id"] == 3 and body["stdout"] == "42\n", body
    assert body["source_code"] is None and body["language"]["name"] == "Multi-file program"
    no_compile = run(j0, language_id=89, additional_files=zipped({"run": "echo ran without compile\n"}))
    assert no_compile["stdout"] == "ran without compile\n" and no_compile["compile_output"] is None


# --- listing, delete, callbacks -------------------------------------------------------------------------------


def test_list_and_delete(j0: httpx.Client) -> None:
    token = run(j0, source_code="print('listed')", language_id=71)["token"]
    # base64: the listing holds the other tests' submissions too, and one of them may print bytes that are not
    # UTF-8 (then Judge0, and we, refuse a plain-text listing with 400)
    encoded = {"base64_encoded": "true"}
    listed = j0.get("/submissions", params={"per_page": 2, "fields": "token,stdout", **encoded}).json()
    assert listed["submissions"][0] == {"token": token, "stdout": b64("listed\n") + "\n"}
    meta = listed["meta"]
    assert meta["current_page"] == 1 and meta["prev_page"] is None and meta["total_count"] >= 2
    assert meta["total_pages"] == -(-meta["total_count"] // 2) and meta["next_page"] == 2
    deleted = j0.delete(f"/submissions/{token}", params={"fields": "token,stdout"})
    assert deleted.json() == {"token": token, "stdout": b64("listed\n") + "\n"}
    assert j0.get(f"/submissions/{token}").status_code == 404
    page = j0.get("/submissions", params=encoded)
    assert page.status_code == 200, page.text
    assert all(row["token"] != token for row in page.json()["submissions"])
    busy = j0.post("/submissions", json={"source_code": "import time; time.sleep(3)", "language_id": 71}).json()
    refused = j0.delete(f"/submissions/{busy['token']}")
    assert refused.status_code == 400
    assert re.fullmatch(r"submission cannot be deleted because its status is (1 \(In Queue\)|2 \(Processing\))",
                        refused.json()["error"])  # fmt: skip


class _Hook(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.calls.append(("PUT", body))
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:
        self.calls.append(("POST", {}))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_callback_url_gets_judge0s_put(j0: httpx.Client) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        token = j0.post("/submissions", json={"source_code": "print('called')", "language_id": 71,
                                              "callback_url": url}).json()["token"]  # fmt: skip
        deadline = time.monotonic() + 30
        while not _Hook.calls and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()
    method, body = _Hook.calls[0]
    assert method == "PUT" and list(body) == list(DEFAULT_FIELDS)
    assert body["token"] == token and unb64(body["stdout"]) == b"called\n" and body["status"]["id"] == 3
