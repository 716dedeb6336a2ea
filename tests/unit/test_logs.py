"""cellblock.logs: the formats, the ids on every record, and which client request ids are kept."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from cellblock.logs import REQUEST_ID, ContextFilter, JsonFormatter, TextFormatter, job_context, request_id_from


def record(name: str = "cellblock.sandbox.supervisor", message: str = "run %s", *args: object) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.INFO, __file__, 1, message, args or ("ended",), None)
    ContextFilter().filter(made)
    return made


def test_a_record_inside_a_job_names_the_job_and_its_request_whatever_module_logs_it() -> None:
    with job_context("ab" * 16, "req-1"):
        inside = record()
    outside = record()
    line = json.loads(JsonFormatter().format(inside))
    assert line["request_id"] == "req-1" and line["job_id"] == "ab" * 16 and line["message"] == "run ended"
    assert line["logger"] == "cellblock.sandbox.supervisor" and line["level"] == "INFO"
    assert line["ts"].endswith("+00:00")
    assert "request_id" not in json.loads(JsonFormatter().format(outside))
    text = TextFormatter().format(inside)
    assert text.endswith(f"cellblock.sandbox.supervisor [rid=req-1 job={'ab' * 16}] run ended")
    assert TextFormatter().format(outside).endswith("cellblock.sandbox.supervisor run ended")


def test_the_ids_stay_with_their_own_thread() -> None:
    seen: list[str | None] = []
    with job_context("cd" * 16, "req-2"):
        other = threading.Thread(target=lambda: seen.append(REQUEST_ID.get()))
        other.start()
        other.join()
    assert seen == [None] and REQUEST_ID.get() is None


def test_an_exception_is_one_json_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        made = logging.LogRecord("cellblock.x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(made)
    assert "\n" not in line and "RuntimeError: boom" in json.loads(line)["exc"]


@pytest.mark.parametrize("given", ["abc", "0f" * 16, "client-chosen.id:42", "A" * 128])
def test_a_plain_client_request_id_is_kept(given: str) -> None:
    assert request_id_from(given) == given


@pytest.mark.parametrize("given", [None, "", "A" * 129, "two words", 'x", "level": "ERROR', "line\nbreak", "é"])
def test_anything_else_gets_a_fresh_id(given: str | None) -> None:
    made = request_id_from(given)
    assert made != given and len(made) == 32 and int(made, 16) >= 0
