"""A Cellblock job as a Judge0 CE 1.13.1 submission: status mapping, fields, base64 and number formats.

Pure functions (no FastAPI, no I/O): the API renders GET responses with them and the webhook sender renders
Judge0's callback body. Judge0's wire quirks reproduced on purpose, because clients parse them:

* times are JSON *strings* of decimals (Postgres ``decimal``): ``"0.001"``, ``"5.0"``;
* timestamps are UTC with milliseconds and ``Z`` (the SDK parses ``%Y-%m-%dT%H:%M:%S.%fZ`` and nothing else);
* an empty output is ``null``;
* base64 is Ruby's ``Base64.encode64``: a newline every 60 characters and one at the end.

Status mapping (our verdict/outcome → Judge0 status id), documented in the README:

====================================  =========================================================
ours                                  Judge0
====================================  =========================================================
queued / running                      1 In Queue / 2 Processing
accepted                              3 Accepted
wrong_answer                          4 Wrong Answer
time_limit_exceeded (CPU or wall)     5 Time Limit Exceeded
compilation_error                     6 Compilation Error
signaled SIGSEGV/SIGXFSZ/SIGFPE/      7 / 8 / 9 / 10, other signals 12 Runtime Error (Other)
SIGABRT
runtime_error (non-zero exit)         11 Runtime Error (NZEC)
memory_limit_exceeded                 11 NZEC, exit_code 137, "Exited with error status 137" (Judge0 has
                                      no MLE status: an OOM kill under its bash wrapper looks like this)
output_limit_exceeded                 8 Runtime Error (SIGXFSZ) (Judge0's output cap is RLIMIT_FSIZE)
failed / cancelled                    13 Internal Error, message says why
====================================  =========================================================
"""

from __future__ import annotations

import base64
import signal
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from cellblock.models import JobResult, JobSpec, JobState, Outcome, StepResult, Verdict

STATUSES = {
    1: "In Queue", 2: "Processing", 3: "Accepted", 4: "Wrong Answer", 5: "Time Limit Exceeded",
    6: "Compilation Error", 7: "Runtime Error (SIGSEGV)", 8: "Runtime Error (SIGXFSZ)",
    9: "Runtime Error (SIGFPE)", 10: "Runtime Error (SIGABRT)", 11: "Runtime Error (NZEC)",
    12: "Runtime Error (Other)", 13: "Internal Error", 14: "Exec Format Error",
}  # fmt: skip
SIGNAL_STATUS = {"SIGSEGV": 7, "SIGXFSZ": 8, "SIGFPE": 9, "SIGABRT": 10}
OOM_EXIT_CODE = 137  # 128 + SIGKILL, what bash reports for a child the OOM killer took

# Judge0 v1.13.1's `fields=*`, in its column order (the SDK refuses any other key).
ALL_FIELDS = (
    "source_code", "language_id", "stdin", "expected_output", "stdout", "status_id", "created_at", "finished_at",
    "time", "memory", "stderr", "token", "number_of_runs", "cpu_time_limit", "cpu_extra_time", "wall_time_limit",
    "memory_limit", "stack_limit", "max_processes_and_or_threads", "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit", "max_file_size", "compile_output", "exit_code", "exit_signal",
    "message", "wall_time", "compiler_options", "command_line_arguments", "redirect_stderr_to_stdout",
    "callback_url", "additional_files", "enable_network", "status", "language",
)  # fmt: skip
DEFAULT_FIELDS = ("token", "time", "memory", "stdout", "stderr", "compile_output", "message", "status")
BASE64_FIELDS = frozenset({"stdout", "stderr", "compile_output", "message", "source_code", "stdin", "expected_output"})
DECIMAL_FIELDS = frozenset({"time", "wall_time", "cpu_time_limit", "cpu_extra_time", "wall_time_limit"})


class Judge0Meta(BaseModel):
    """What a Judge0 client sent that the JobSpec does not keep in Judge0's terms (echoed by `fields=*`).

    Stored sealed in the job hash (field ``judge0``); its presence also marks the job as a Judge0 submission
    (listing, PUT callbacks in Judge0's shape)."""

    language_id: int
    language_name: str
    number_of_runs: int = 1
    cpu_time_limit: float
    cpu_extra_time: float
    wall_time_limit: float
    memory_limit: int
    stack_limit: int
    max_processes_and_or_threads: int
    enable_per_process_and_thread_time_limit: bool = False
    enable_per_process_and_thread_memory_limit: bool = False
    max_file_size: int
    compiler_options: str | None = None
    command_line_arguments: str | None = None
    redirect_stderr_to_stdout: bool = False
    callback_url: str | None = None
    additional_files: str | None = None  # the client's base64 zip, as sent
    enable_network: bool = False
    project: bool = False  # language 89: no source_code to echo


class UnconvertibleOutput(Exception):
    """Output that is not UTF-8 asked for without base64_encoded=true (Judge0 answers 400)."""


def token_of(job_id: str) -> str:
    """A 32-hex job id in UUID form: Judge0 tokens are UUIDs, our ids are uuid4().hex — the same number."""
    return f"{job_id[:8]}-{job_id[8:12]}-{job_id[12:16]}-{job_id[16:20]}-{job_id[20:]}"


def encode64(data: bytes) -> str:
    """Ruby's Base64.encode64: 60 characters a line, each line ending in a newline."""
    text = base64.b64encode(data).decode("ascii")
    return "".join(text[i : i + 60] + "\n" for i in range(0, len(text), 60))


def decimal(value: float | None) -> str | None:
    """A Postgres decimal as Rails prints it: "0.001", "0.03", "5.0"."""
    if value is None:
        return None
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def step_bytes(step: StepResult | None, stream: str) -> bytes:
    if step is None:
        return b""
    text: str = getattr(step, stream)
    return base64.b64decode(text) if getattr(step, f"{stream}_encoding") == "base64" else text.encode()


def _signal_number(name: str | None) -> int | None:
    try:
        return int(signal.Signals[name]) if name else None
    except KeyError:
        return None


def _run_status(verdict: Verdict, run: StepResult) -> tuple[int, str | None, int | None, int | None]:
    """(status id, message, exit_code, exit_signal) of a finished run, in isolate's words."""
    if verdict == Verdict.MEMORY_LIMIT_EXCEEDED:
        return 11, f"Exited with error status {OOM_EXIT_CODE}", OOM_EXIT_CODE, None
    if verdict == Verdict.OUTPUT_LIMIT_EXCEEDED:
        return 8, "Caught fatal signal 25", 0, 25
    if verdict == Verdict.TIME_LIMIT_EXCEEDED:
        wall = run.outcome == Outcome.TIME_LIMIT_WALL
        return 5, "Time limit exceeded (wall clock)" if wall else "Time limit exceeded", 0, None
    if run.outcome == Outcome.SIGNALED:
        number = _signal_number(run.signal)
        return SIGNAL_STATUS.get(run.signal or "", 12), f"Caught fatal signal {number}", 0, number
    if run.outcome == Outcome.RUNTIME_ERROR:
        return 11, f"Exited with error status {run.exit_code}", run.exit_code, None
    return (3 if verdict == Verdict.ACCEPTED else 4), None, run.exit_code or 0, None


def outcome_fields(result: JobResult) -> dict[str, Any]:
    """The result columns (status, outputs as bytes, times, memory, exit code and signal, message)."""
    out: dict[str, Any] = {"stdout": b"", "stderr": b"", "compile_output": b"", "message": None, "time": None,
                           "wall_time": None, "memory": None, "exit_code": None, "exit_signal": None}  # fmt: skip
    if result.compile is not None:  # Judge0 compiles with stderr into stdout
        out["compile_output"] = step_bytes(result.compile, "stdout") + step_bytes(result.compile, "stderr")
    if result.state in (JobState.QUEUED, JobState.RUNNING):
        out["status_id"] = 1 if result.state == JobState.QUEUED else 2
        return out
    if result.state != JobState.DONE:
        out["status_id"], out["message"] = 13, (result.message or result.state.value).encode()
        return out
    if result.verdict == Verdict.COMPILATION_ERROR:
        out["status_id"] = 6
        if result.compile is not None and result.compile.outcome in (Outcome.TIME_LIMIT_CPU, Outcome.TIME_LIMIT_WALL):
            out["compile_output"] = b"Compilation time limit exceeded."
        return out
    test = result.tests[0] if result.tests else None
    if test is None or test.run is None or test.verdict == Verdict.INTERNAL_ERROR:
        out["status_id"], out["message"] = 13, (result.message or "internal error").encode()
        return out
    run = test.run
    status, message, exit_code, exit_signal = _run_status(test.verdict, run)
    out.update(status_id=status, message=message.encode() if message else None, exit_code=exit_code,
               exit_signal=exit_signal, stdout=step_bytes(run, "stdout"), stderr=step_bytes(run, "stderr"),
               time=run.cpu_time_s, wall_time=run.wall_time_s, memory=run.memory_kib)  # fmt: skip
    return out


def _inputs(spec: JobSpec | None, meta: Judge0Meta) -> dict[str, Any]:
    """source_code, stdin and expected_output rebuilt from the spec (as bytes)."""
    if spec is None:
        return {"source_code": None, "stdin": None, "expected_output": None}
    main = spec.files[0]
    source = base64.b64decode(main.content) if main.encoding == "base64" else main.content.encode()
    test = spec.tests[0] if spec.tests else None
    stdin = test.stdin if test is not None else (spec.stdin or "")
    expected = test.expected_output if test is not None else None
    return {"source_code": None if meta.project else source, "stdin": stdin.encode(),
            "expected_output": expected.encode() if expected is not None else None}  # fmt: skip


def submission(result: JobResult, spec: JobSpec | None, meta: Judge0Meta, fields: tuple[str, ...],
               base64_encoded: bool) -> dict[str, Any]:  # fmt: skip
    """The submission object with exactly `fields`, Judge0's formats. UnconvertibleOutput if it must be base64."""
    values = outcome_fields(result)
    needs_inputs = {"source_code", "stdin", "expected_output"} & set(fields)
    if needs_inputs:
        values.update(_inputs(spec, meta))
    out: dict[str, Any] = {}
    for name in fields:
        if name in values:
            value = values[name]
        elif name == "token":
            value = token_of(result.id)
        elif name == "status":
            value = {"id": values["status_id"], "description": STATUSES[values["status_id"]]}
        elif name == "language":
            value = {"id": meta.language_id, "name": meta.language_name}
        elif name == "created_at":
            value = timestamp(result.created_at)
        elif name == "finished_at":
            value = timestamp(result.finished_at) if result.state not in (JobState.QUEUED, JobState.RUNNING) else None
        else:
            value = getattr(meta, name)
        if name in BASE64_FIELDS and value is not None:
            value = _text(value, base64_encoded)
        elif name in DECIMAL_FIELDS:
            value = decimal(value)
        out[name] = value
    return out


def _text(value: bytes, base64_encoded: bool) -> str | None:
    if not value:
        return None
    if base64_encoded:
        return encode64(value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnconvertibleOutput from exc


def callback_body(result: JobResult, meta: Judge0Meta) -> dict[str, Any]:
    """What Judge0's worker PUTs to callback_url: the default fields, always base64."""
    return submission(result, None, meta, DEFAULT_FIELDS, base64_encoded=True)
