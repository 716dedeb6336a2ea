"""Bad input on the Judge0 API answers like Judge0: 422 field hash, 400 {"error"}, 404, 503 "queue is full".

One API with a worker (the shared module service) for validation, and one API alone with a backlog cap of 1
for the full queue (no worker needed: the cap is checked before anything is queued).
"""

from __future__ import annotations

import base64
import io
import stat
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.service.conftest import Service, made_service

pytestmark = pytest.mark.sandbox

OK = {"source_code": "print(1)", "language_id": 71}


@pytest.fixture(scope="module")
def j0(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.base_url + "/judge0", timeout=60) as client:
        yield client


def refused(answer: httpx.Response, status: int, body: Any) -> None:
    assert (answer.status_code, answer.json()) == (status, body), answer.text
    assert "Traceback" not in answer.text


def zip_of(*members: tuple[zipfile.ZipInfo | str, str]) -> str:
    """A zip with fixed member times: the bytes (and the test ids made from them) are the same in every
    collecting process; a name turned into ZipInfo would otherwise carry the current time."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for info, content in members:
            archive.writestr(zipfile.ZipInfo(info, date_time=(2020, 1, 1, 0, 0, 0)) if isinstance(info, str)
                             else info, content)  # fmt: skip
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("submission", "errors"),
    [
        ({"source_code": "x"}, {"language_id": ["can't be blank"]}),
        ({"language_id": 71}, {"source_code": ["can't be blank"]}),
        ({**OK, "language_id": 123456789}, {"language_id": ["language with id 123456789 doesn't exist"]}),
        ({**OK, "language_id": 84}, {"language_id": ["language with id 84 doesn't exist"]}),  # VB.NET: not in Debian 12
        ({**OK, "language_id": 4}, {"language_id": ["language with id 4 is archived and cannot be used anymore"]}),
        ({**OK, "wall_time_limit": 1000}, {"wall_time_limit": ["must be less than or equal to 120.0"]}),
        ({**OK, "wall_time_limit": 0.5}, {"wall_time_limit": ["must be greater than or equal to 1"]}),
        ({**OK, "memory_limit": 1000}, {"memory_limit": ["must be greater than or equal to 2048"]}),
        ({**OK, "cpu_time_limit": "fast"}, {"cpu_time_limit": ["is not a number"]}),
        ({**OK, "number_of_runs": 21}, {"number_of_runs": ["must be less than or equal to 20"]}),
        ({**OK, "max_processes_and_or_threads": 0}, {"max_processes_and_or_threads": ["must be greater than 0"]}),
        ({**OK, "enable_network": True}, {"enable_network": ["enabling network is not allowed"]}),
        ({**OK, "enable_per_process_and_thread_time_limit": True},
         {"enable_per_process_and_thread_time_limit": ["this option cannot be enabled"]}),
        ({**OK, "compiler_options": "-O2"},
         {"compiler_options": ["setting compiler options is only allowed for compiled languages"]}),
        ({**OK, "command_line_arguments": "x" * 513},
         {"command_line_arguments": ["is too long (maximum is 512 characters)"]}),
        ({**OK, "callback_url": "ftp://x"}, None),
        ({"language_id": 89, "source_code": "echo", "additional_files": zip_of(("run", "echo"))},
         {"source_code": ["must be blank"]}),
        ({"language_id": 89}, {"additional_files": ["can't be blank"]}),
        ({"language_id": 89, "additional_files": zip_of(("compile", "true"))},
         {"additional_files": ["must contain a run script at the top of the zip"]}),
        ({**OK, "additional_files": "@@not base64@@"}, {"additional_files": ["is not valid base64"]}),
        ({**OK, "additional_files": base64.b64encode(b"plain text").decode()},
         {"additional_files": ["is not a zip archive"]}),
    ],
    ids=lambda v: str(v)[:60],
)  # fmt: skip
def test_validation_errors_are_judge0s_field_hash(j0: httpx.Client, submission: dict[str, Any],
                                                   errors: dict[str, list[str]] | None) -> None:  # fmt: skip
    answer = j0.post("/submissions", json=submission)
    assert answer.status_code == 422, answer.text
    if errors is None:  # our own check, in Judge0's shape
        assert list(answer.json()) == ["callback_url"] and "http" in answer.json()["callback_url"][0]
    else:
        assert answer.json() == errors


def test_bad_base64_in_source_is_named(j0: httpx.Client) -> None:
    answer = j0.post("/submissions", params={"base64_encoded": "true"}, json={**OK, "source_code": "%%%"})
    refused(answer, 422, {"source_code": ["is not valid base64"]})


def test_unsafe_archives_are_refused(j0: httpx.Client) -> None:
    link = zipfile.ZipInfo("evil")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    for members, fragment in (((("../escape", "x"),), "unsafe path"), ((("/etc/x", "x"),), "unsafe path"),
                              (((link, "/etc/shadow"),), "symbolic link")):  # fmt: skip
        answer = j0.post("/submissions", json={**OK, "additional_files": zip_of(*members)})
        assert answer.status_code == 422 and fragment in answer.json()["additional_files"][0], answer.text
    bomb = zip_of(("big", "0" * (2 << 20)))  # 2 MiB unpacked, over the 1 MiB default cap; deflates to little
    answer = j0.post("/submissions", json={**OK, "additional_files": bomb})
    assert answer.status_code == 422 and "extract limit" in answer.json()["additional_files"][0]


def test_bad_fields_unknown_tokens_and_non_json(j0: httpx.Client) -> None:
    refused(j0.post("/submissions", params={"fields": "stdout,foo,bar"}, json=OK), 400,
            {"error": "invalid fields: [foo, bar]"})  # fmt: skip
    refused(j0.get("/submissions/00000000-0000-4000-8000-000000000000"), 404, {"status": 404, "error": "Not Found"})
    refused(j0.get("/submissions/not-a-token"), 404, {"status": 404, "error": "Not Found"})
    refused(j0.post("/submissions", content=b'{"language_id": 71,', headers={"content-type": "application/json"}),
            400, {"status": 400, "error": "Bad Request"})  # fmt: skip
    refused(j0.post("/submissions/batch", content=b"nope", headers={"content-type": "application/json"}), 400,
            {"status": 400, "error": "Bad Request"})  # fmt: skip
    refused(j0.get("/submissions", params={"page": "0"}), 400, {"error": "invalid page: 0"})
    refused(j0.get("/submissions", params={"per_page": "-2"}), 400, {"error": "invalid per_page: -2"})


def test_batches_too_large_empty_or_partly_invalid(j0: httpx.Client) -> None:
    too_many = {"submissions": [OK] * 1001}
    refused(j0.post("/submissions/batch", json=too_many), 400,
            {"error": "number of submissions in a batch should be less than or equal to 1000"})  # fmt: skip
    refused(j0.post("/submissions/batch", json={"submissions": []}), 400,
            {"error": "there should be at least one submission in a batch"})  # fmt: skip
    refused(j0.get("/submissions/batch"), 400, {"error": "there should be at least one submission in a batch"})
    mixed = j0.post("/submissions/batch", json={"submissions": [OK, {"language_id": 123456789, "source_code": "x"}]})
    assert mixed.status_code == 201
    assert set(mixed.json()[0]) == {"token"}
    assert mixed.json()[1] == {"language_id": ["language with id 123456789 doesn't exist"]}
    refused(j0.post("/submissions/batch", json={"submissions": [{"source_code": "x"}]}), 422,
            [{"language_id": ["can't be blank"]}])  # fmt: skip
    token = mixed.json()[0]["token"]
    got = j0.get("/submissions/batch", params={"tokens": f"{token},00000000-0000-4000-8000-000000000000",
                                               "fields": "token"})  # fmt: skip
    assert got.json() == {"submissions": [{"token": token}, None]}


def test_a_full_queue_is_503() -> None:
    with made_service(CELLBLOCK_MAX_BACKLOG="1") as svc:
        svc.start_api()
        with httpx.Client(base_url=svc.base_url + "/judge0", timeout=30) as j0:
            refused(j0.post("/submissions/batch", json={"submissions": [OK, OK]}), 503, {"error": "queue is full"})
