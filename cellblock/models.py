"""The wire contract: what a job asks for and what comes back.

Closed sets, documented where they are defined:

* `Outcome` — what happened to one sandboxed step (a compile or one test run), decided by the sandbox in
  DESIGN's verdict order: wall timer → CPU limit → OOM kill → output/file limit → signal → exit code.
* `Verdict` — the judgement of a test or a whole job. The job's verdict is its first non-accepted test's.
* `JobState` — the lifecycle: queued → running → done | failed (internal) | cancelled.
* `Isolation` — which sandbox ran one step: fresh, warm, warm-shared or prewarmed (see `StepResult.isolation`).

Everything here is plain pydantic: JSON in, JSON out, never pickle.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, get_args

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


# Which sandbox ran a step (the server's `isolation` setting decides, but a warm setting runs some steps fresh).
Isolation = Literal["fresh", "warm", "warm-shared", "prewarmed"]
ISOLATIONS: tuple[str, ...] = get_args(Isolation)
ISOLATION_DESCRIPTION = (
    "Which sandbox ran this step. fresh: a new sandbox (namespaces, mounts, cgroups) for this run alone; warm: a "
    "long-lived sandbox of the slot, with new pid, mount and IPC namespaces and cgroups for this run; warm-shared: a "
    "long-lived sandbox whose runs share its namespaces (opt-in, trusted work); prewarmed: a fork of a pre-warmed "
    "interpreter in a warm sandbox. A warm setting still runs some steps fresh: network access, interactive runs, a "
    "custom checker (its own box), a request too large for a warm slot, more jobs at once than warm slots, or a warm "
    "slot that failed before the program started. The worker's log says why."
)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Signals an interactive job's program may be sent (Piston's list in api/src/api/v2.js, minus SIGEMT, SIGINFO and
# SIGLOST, which Linux does not have; SIGCLD, SIGIOT, SIGPOLL and SIGUNUSED are Linux's other names for
# SIGCHLD, SIGABRT, SIGIO and SIGSYS).
LIVE_SIGNALS = (
    "SIGABRT", "SIGALRM", "SIGBUS", "SIGCHLD", "SIGCLD", "SIGCONT", "SIGFPE", "SIGHUP", "SIGILL", "SIGINT", "SIGIO",
    "SIGIOT", "SIGKILL", "SIGPIPE", "SIGPOLL", "SIGPROF", "SIGPWR", "SIGQUIT", "SIGSEGV", "SIGSTKFLT", "SIGSTOP",
    "SIGTSTP", "SIGSYS", "SIGTERM", "SIGTRAP", "SIGTTIN", "SIGTTOU", "SIGUNUSED", "SIGURG", "SIGUSR1", "SIGUSR2",
    "SIGVTALRM", "SIGXCPU", "SIGXFSZ", "SIGWINCH",
)  # fmt: skip


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
        examples=["token"],
        description="judge0: trailing whitespace per line and at the end ignored; exact: byte-for-byte; "
        "token: whitespace-separated tokens equal; float: tokens equal or numbers within tolerance.",
    )
    abs_tol: float = Field(1e-6, ge=0, description="Absolute tolerance for `float`.", examples=[1e-6])
    rel_tol: float = Field(1e-6, ge=0, description="Relative tolerance for `float`.", examples=[1e-6])


class CustomChecker(_Strict):
    kind: Literal["custom"] = Field("custom", description="A checker program of yours.", examples=["custom"])
    language: str = Field(description="Language of the checker program.", examples=["python3"])
    source: str = Field(
        examples=[
            "import sys\nsys.exit(0 if open(sys.argv[3]).read().split() == open(sys.argv[2]).read().split() else 1)"
        ],
        description="Checker program. Run sandboxed as `checker input expected actual` with those three files "
        "in its /box; exit 0 = accepted, 1 = wrong answer, anything else = internal error. "
        "Its stdout becomes the test's checker_message.",
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
    runs: int = Field(
        1,
        ge=1,
        le=20,
        description="Run each test this many times; its time and memory are the averages and its output the last "
        "run's. Stops at the first run that is not accepted (Judge0's number_of_runs).",
        examples=[3],
    )
    merge_stderr: bool = Field(
        False, description="Send the program's stderr into its stdout, in order, like `2>&1`.", examples=[True]
    )
    interactive: bool = Field(
        False,
        description="Feed the run's stdin live from the job's input stream, and let it take signals (service only; "
        "what Piston's WebSocket /api/v2/connect uses). One run: no `tests`, `runs` = 1.",
        examples=[False],
    )
    callback_url: str | None = Field(
        None, description="POSTed the JobResult when done (service only).", examples=["https://example.test/hook"]
    )
    idempotency_key: str | None = Field(
        None, description="Same key, same job (service only).", examples=["order-1234-attempt"]
    )


STEP_EXAMPLE = {
    "outcome": "ok", "exit_code": 0, "signal": None, "cpu_time_s": 0.011, "wall_time_s": 0.013, "memory_kib": 3100,
    "stdout": "3\n", "stderr": "", "stdout_encoding": "utf8", "stderr_encoding": "utf8", "stdout_truncated": False,
    "stderr_truncated": False, "message": None, "isolation": "warm",
}  # fmt: skip
ENCODING = "utf8: the text as is; base64: the bytes were not UTF-8."


class StepResult(BaseModel):
    """One sandboxed run: a compile, or one test."""

    outcome: Outcome = Field(description="What happened, decided in a fixed order from our own data.", examples=["ok"])
    exit_code: int | None = Field(None, description="Exit status when the program exited by itself.", examples=[0])
    signal: str | None = Field(
        None, description="Signal name when it was killed by one, e.g. SIGSEGV.", examples=["SIGSEGV"]
    )
    cpu_time_s: float = Field(description="User + system CPU of every process, from the cgroup.", examples=[0.012])
    wall_time_s: float = Field(description="From release to exit, our monotonic clock.", examples=[0.015])
    memory_kib: int = Field(description="Peak memory of the cgroup, KiB.", examples=[3072])
    stdout: str = Field("", description="Standard output, up to the output cap.", examples=["3\n"])
    stderr: str = Field("", description="Standard error, up to the output cap.", examples=[""])
    stdout_encoding: Literal["utf8", "base64"] = Field("utf8", description=ENCODING, examples=["utf8"])
    stderr_encoding: Literal["utf8", "base64"] = Field("utf8", description=ENCODING, examples=["utf8"])
    stdout_truncated: bool = Field(False, description="stdout was longer than the cap and is cut.", examples=[False])
    stderr_truncated: bool = Field(False, description="stderr was longer than the cap and is cut.", examples=[False])
    message: str | None = Field(None, description="Why the step ended, in words.", examples=["CPU time limit exceeded"])
    isolation: Isolation = Field("fresh", description=ISOLATION_DESCRIPTION, examples=["warm"])


class TestResult(BaseModel):
    id: str = Field(description="The test's id (yours, or its 1-based index).", examples=["1"])
    verdict: Verdict = Field(description="This test's verdict.", examples=["accepted"])
    run: StepResult | None = Field(None, description="The run; null when the test was skipped.",
                                   examples=[STEP_EXAMPLE])  # fmt: skip
    checker_message: str | None = Field(
        None,
        description="Where the output differs, or the custom checker's stdout.",
        examples=["line 1: expected '4', got '3'"],
    )


class OutputFile(BaseModel):
    name: str = Field(description="Path relative to /box.", examples=["out/result.txt"])
    content: str = Field(description="The file's content, in `encoding`.", examples=["42\n"])
    encoding: Literal["utf8", "base64"] = Field(description=ENCODING, examples=["utf8"])
    size: int = Field(description="The file's full size in bytes.", examples=[3])
    truncated: bool = Field(False, description="Only part of the file fit under the cap.", examples=[False])


class JobResult(BaseModel):
    """What a job did: its state, verdict, compile step, each test, and output files."""

    id: str = Field(description="The job's id.", examples=["4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"])
    state: JobState = Field(description="queued → running → done | failed (internal) | cancelled.", examples=["done"])
    verdict: Verdict | None = Field(
        None, description="The first non-accepted test's verdict, or accepted; null until done.", examples=["accepted"]
    )
    language: str = Field(description="The language's canonical name.", examples=["python3"])
    compile: StepResult | None = Field(None, description="The compile step; null for interpreted languages.",
                                       examples=[None])  # fmt: skip
    tests: list[TestResult] = Field(default_factory=list, description="One per test, in order.",
                                    examples=[[{"id": "1", "verdict": "accepted", "run": STEP_EXAMPLE,
                                                "checker_message": None}]])  # fmt: skip
    files: list[OutputFile] = Field(default_factory=list, description="Output files that matched `output_files`.",
                                    examples=[[]])  # fmt: skip
    created_at: datetime = Field(description="When the job was accepted (UTC).", examples=["2026-01-01T12:00:00Z"])
    started_at: datetime | None = Field(None, description="When a worker started it.",
                                        examples=["2026-01-01T12:00:00.004Z"])  # fmt: skip
    finished_at: datetime | None = Field(None, description="When it finished.", examples=["2026-01-01T12:00:00.030Z"])
    worker: str | None = Field(None, description="The worker that ran it.", examples=["cellblock-host1-1234"])
    message: str | None = Field(None, description="Why it failed or stopped, when it did.", examples=[None])
