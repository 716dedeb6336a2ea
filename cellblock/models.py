"""The wire contract: what a job asks for and what comes back.

Closed sets, documented where they are defined:

* `Outcome` — what happened to one sandboxed step (a compile or one test run), decided by the sandbox in
  DESIGN's verdict order: wall timer → CPU limit → OOM kill → output/file limit → signal → exit code.
* `Verdict` — the judgement of a test or a whole job. The job's verdict is its first non-accepted test's.
* `JobState` — the lifecycle: queued → running → done | failed (internal) | cancelled.

Everything here is plain pydantic: JSON in, JSON out, never pickle.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Outcome(StrEnum):
    OK = "ok"
    RUNTIME_ERROR = "runtime_error"  # exited with a non-zero code
    SIGNALED = "signaled"  # killed by a signal that is not one of our limits
    TIME_LIMIT_CPU = "time_limit_cpu"
    TIME_LIMIT_WALL = "time_limit_wall"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"  # stdout/stderr over the cap, or a file over the file-size limit
    INTERNAL = "internal"


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    WRONG_ANSWER = "wrong_answer"
    TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
    MEMORY_LIMIT_EXCEEDED = "memory_limit_exceeded"
    OUTPUT_LIMIT_EXCEEDED = "output_limit_exceeded"
    RUNTIME_ERROR = "runtime_error"
    COMPILATION_ERROR = "compilation_error"
    INTERNAL_ERROR = "internal_error"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceFile(_Strict):
    name: str = Field(description="Relative path inside /box. No '..', no absolute path.", examples=["main.py"])
    content: str = Field(description="The file's content, in `encoding`.", examples=["print(input())"])
    encoding: Literal["utf8", "base64"] = Field("utf8", description="How `content` is encoded.", examples=["utf8"])


class Limits(_Strict):
    """Per-step limits. Unset fields take the server's defaults; values above its maxima are refused."""

    cpu_time_s: float | None = Field(
        None, gt=0, description="Total CPU time of all processes, seconds.", examples=[2.0]
    )
    wall_time_s: float | None = Field(None, gt=0, description="Wall-clock time, seconds.", examples=[5.0])
    memory_mib: int | None = Field(None, gt=0, description="Memory (RSS + page cache + tmpfs), MiB.", examples=[256])
    processes: int | None = Field(None, gt=0, description="Processes and threads at once.", examples=[64])
    output_kib: int | None = Field(None, gt=0, description="Cap on stdout and on stderr, each, KiB.", examples=[1024])
    file_size_kib: int | None = Field(
        None, gt=0, description="Largest file the program may write, KiB.", examples=[10240]
    )


class TestCase(_Strict):
    id: str | None = Field(
        None, description="Your name for the test; defaults to its 1-based index.", examples=["small"]
    )
    stdin: str = Field("", description="Standard input.", examples=["1 2\n"])
    expected_output: str | None = Field(
        None, description="Expected stdout; null means 'exit 0 is enough'.", examples=["3\n"]
    )
    args: list[str] | None = Field(
        None, description="Command-line arguments for this test (else the job's).", examples=[["--fast"]]
    )


class BuiltinChecker(_Strict):
    kind: Literal["judge0", "exact", "token", "float"] = Field(
        "judge0",
        description="judge0: trailing whitespace per line and at the end ignored; exact: byte-for-byte; "
        "token: whitespace-separated tokens equal; float: tokens equal or numbers within tolerance.",
    )
    abs_tol: float = Field(1e-6, ge=0, description="Absolute tolerance for `float`.", examples=[1e-6])
    rel_tol: float = Field(1e-6, ge=0, description="Relative tolerance for `float`.", examples=[1e-6])


class CustomChecker(_Strict):
    kind: Literal["custom"] = "custom"
    language: str = Field(description="Language of the checker program.", examples=["python3"])
    source: str = Field(
        description="Checker program. Run sandboxed as `checker input expected actual` with those three files "
        "in its /box; exit 0 = accepted, 1 = wrong answer, anything else = internal error. "
        "Its stdout becomes the test's checker_message."
    )


Checker = Annotated[BuiltinChecker | CustomChecker, Field(discriminator="kind")]


class JobSpec(_Strict):
    language: str = Field(description="Language name or alias (see `cellblock languages`).", examples=["python3"])
    files: list[SourceFile] = Field(
        min_length=1,
        description="The first file is the main file.",
        examples=[[{"name": "main.py", "content": "print(input())"}]],
    )
    compile_options: list[str] = Field(
        default_factory=list, description="Extra compiler flags.", examples=[["-DLOCAL"]]
    )
    args: list[str] = Field(
        default_factory=list, description="Command-line arguments for every run.", examples=[["a", "b"]]
    )
    stdin: str | None = Field(None, description="Standard input when no `tests` are given.", examples=["hello\n"])
    tests: list[TestCase] = Field(
        default_factory=list,
        description="Test cases; empty means one run on `stdin`.",
        examples=[[{"stdin": "1 2\n", "expected_output": "3\n"}]],
    )
    checker: Checker = Field(
        default_factory=BuiltinChecker, description="How stdout is compared.", examples=[{"kind": "token"}]
    )
    limits: Limits = Field(
        default_factory=Limits, description="Limits for each test run.", examples=[{"cpu_time_s": 1, "memory_mib": 128}]
    )
    compile_limits: Limits = Field(
        default_factory=Limits, description="Limits for the compile step.", examples=[{"wall_time_s": 30}]
    )
    network: bool = Field(
        False, description="Give the program network access (only if the server allows it).", examples=[False]
    )
    output_files: list[str] = Field(
        default_factory=list, description="Globs, relative to /box, to return.", examples=[["out/*.txt"]]
    )
    stop_on_first_failure: bool = Field(
        False, description="Skip the remaining tests after the first failure.", examples=[True]
    )
    callback_url: str | None = Field(
        None, description="POSTed the JobResult when done (service only).", examples=["https://example.test/hook"]
    )
    idempotency_key: str | None = Field(
        None, description="Same key, same job (service only).", examples=["order-1234-attempt"]
    )


class StepResult(BaseModel):
    outcome: Outcome
    exit_code: int | None = Field(None, description="Exit status when the program exited by itself.", examples=[0])
    signal: str | None = Field(
        None, description="Signal name when it was killed by one, e.g. SIGSEGV.", examples=["SIGSEGV"]
    )
    cpu_time_s: float = Field(description="User + system CPU of every process, from the cgroup.", examples=[0.012])
    wall_time_s: float = Field(description="From release to exit, our monotonic clock.", examples=[0.015])
    memory_kib: int = Field(description="Peak memory of the cgroup, KiB.", examples=[3072])
    stdout: str = ""
    stderr: str = ""
    stdout_encoding: Literal["utf8", "base64"] = "utf8"
    stderr_encoding: Literal["utf8", "base64"] = "utf8"
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    message: str | None = Field(None, description="Why the step ended, in words.", examples=["CPU time limit exceeded"])


class TestResult(BaseModel):
    id: str
    verdict: Verdict
    run: StepResult | None = Field(None, description="Null when the test was skipped.")
    checker_message: str | None = None


class OutputFile(BaseModel):
    name: str
    content: str
    encoding: Literal["utf8", "base64"]
    size: int
    truncated: bool = False


class JobResult(BaseModel):
    id: str
    state: JobState
    verdict: Verdict | None = None
    language: str
    compile: StepResult | None = None
    tests: list[TestResult] = Field(default_factory=list)
    files: list[OutputFile] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    message: str | None = None
