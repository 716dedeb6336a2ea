"""Piston requests → a JobSpec; a JobResult → Piston's answer. Pure functions, no I/O.

Request checks run in upstream's order with upstream's messages (api/src/api/v2.js ``get_job``): language,
version, files, each file's content, the runtime, at least one utf8 file, then each limit (memory, timeout,
CPU time; compile before run): a number, not above our maximum, not negative. Units are Piston's: ms for
times, bytes for memory. Where upstream has no limit to enforce we still do (our server maxima), and the
message names the maximum in Piston's unit.

Results: our outcome → Piston's two-letter status (see `STATUS`); times in ms, memory in bytes; `output` is
stdout and stderr interleaved in the order the worker streamed them (`Chunks`), which is exact to the
supervisor's poll interval (10 ms): within one poll, stdout comes first. If the streamed chunks do not add
up to the stored streams (events are capped), `output` falls back to stdout + stderr.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

from cellblock.api.piston.body import PistonError
from cellblock.config import LimitBounds, Settings
from cellblock.languages.registry import Language
from cellblock.models import JobResult, JobState, Outcome, StepResult

Chunks = dict[str, list[tuple[str, str]]]  # step label ("compile", "1") → [(stream, text)] in streamed order
ENCODINGS = ("utf8", "base64", "hex")
MIB = 1024 * 1024
# Piston's own defaults (api/src/config.js): ms of wall and CPU time per stage.
PISTON_DEFAULT_MS = {"compile_timeout": 10000, "run_timeout": 3000, "compile_cpu_time": 10000, "run_cpu_time": 3000}
STATUS = {
    Outcome.OK: None,
    Outcome.RUNTIME_ERROR: "RE",
    Outcome.SIGNALED: "SG",
    Outcome.TIME_LIMIT_CPU: "TO",
    Outcome.TIME_LIMIT_WALL: "TO",
    Outcome.MEMORY_LIMIT: "SG",  # isolate (Piston's sandbox) reports an OOM kill as a SIGKILL death
    Outcome.OUTPUT_LIMIT: "OL",  # "EL" when only stderr went over
    Outcome.INTERNAL: "XX",
}


@dataclass(frozen=True)
class LiveRuntime:
    """A language some live worker runs, under its Piston name, with the toolchain's real version."""

    language: Language
    version: str

    @property
    def name(self) -> str:
        return self.language.piston_name or self.language.name

    def answers_to(self, name: str) -> bool:
        return name in (self.name, *self.language.piston_aliases, self.language.name)


def _require_text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not value or not isinstance(value, str):
        raise PistonError(400, f"{field} is required as a string")
    return value


def check_shape(body: Any) -> tuple[str, str, list[Any]]:
    """language, version and files, checked before the runtime is looked up (as upstream does)."""
    if not isinstance(body, dict):
        raise PistonError(400, "language is required as a string")
    language, version = _require_text(body, "language"), _require_text(body, "version")
    files = body.get("files")
    if not isinstance(files, list):
        raise PistonError(400, "files is required as an array")
    for index, file in enumerate(files):
        if not isinstance(file, dict) or not isinstance(file.get("content"), str):
            raise PistonError(400, f"files[{index}].content is required as a string")
    return language, version, files


def _file(index: int, file: dict[str, Any]) -> dict[str, str]:
    """One Piston file as a SourceFile dict (hex becomes base64; our model knows utf8 and base64)."""
    encoding = file.get("encoding") or "utf8"
    if encoding not in ENCODINGS:
        raise PistonError(400, f"files[{index}].encoding must be one of utf8, base64, hex")
    name = file.get("name") or f"file{index}.code"
    if not isinstance(name, str):
        raise PistonError(400, f"files[{index}].name must be a string")
    content = file["content"]
    if encoding == "hex":
        try:
            content, encoding = base64.b64encode(bytes.fromhex(content)).decode("ascii"), "base64"
        except ValueError:
            raise PistonError(400, f"files[{index}].content is not valid hex") from None
    elif encoding == "base64":
        try:
            base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise PistonError(400, f"files[{index}].content is not valid base64") from None
    return {"name": name, "content": content, "encoding": encoding}


def _limit(body: dict[str, Any], name: str, top: float) -> float | None:
    """A Piston limit field checked as upstream does; None = take the default. `top` is in Piston's unit."""
    value = body.get(name)
    if not value:  # absent, null or 0: the default, as upstream (`if (!constraint_value) continue`)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PistonError(400, f"If specified, {name} must be a number")
    if value > top:
        raise PistonError(400, f"{name} cannot exceed the configured limit of {int(top)}")
    if name.endswith("memory_limit") and value == -1:
        return None  # Piston's "no limit": our default applies (every job here has a memory limit)
    if value < 0:
        raise PistonError(400, f"{name} must be non-negative")
    return float(value)


def _limits(body: dict[str, Any], stage: str, default: LimitBounds, top: LimitBounds) -> dict[str, Any]:
    memory = _limit(body, f"{stage}_memory_limit", top.memory_mib * MIB)
    wall = _limit(body, f"{stage}_timeout", top.wall_time_s * 1000)
    cpu = _limit(body, f"{stage}_cpu_time", top.cpu_time_s * 1000)
    wall_ms = wall if wall is not None else min(PISTON_DEFAULT_MS[f"{stage}_timeout"], top.wall_time_s * 1000)
    cpu_ms = cpu if cpu is not None else min(PISTON_DEFAULT_MS[f"{stage}_cpu_time"], top.cpu_time_s * 1000)
    return {
        "wall_time_s": wall_ms / 1000,
        "cpu_time_s": cpu_ms / 1000,
        "memory_mib": max(1, math.ceil(memory / MIB)) if memory is not None else default.memory_mib,
    }


def _args(body: dict[str, Any]) -> list[str]:
    args = body.get("args")
    if args is None:
        return []
    if isinstance(args, str):
        return [args]  # upstream would split a string into characters (piston#311); one argument is meant
    if not isinstance(args, list) or any(isinstance(a, (dict, list)) for a in args):
        raise PistonError(400, "args must be an array of strings")
    return [a if isinstance(a, str) else str(a).lower() if isinstance(a, bool) else str(a) for a in args]


def _stdin(body: dict[str, Any]) -> str:
    stdin = body.get("stdin")
    if stdin is None:
        return ""
    if not isinstance(stdin, str):
        raise PistonError(400, "stdin must be a string")
    return stdin if stdin == "" or stdin.endswith("\n") else stdin + "\n"  # as upstream: a trailing newline


def find_runtime(runtimes: list[LiveRuntime], language: str, version: str) -> LiveRuntime:
    from cellblock.api.piston.semver import parse_version, satisfies

    matching = [rt for rt in runtimes if rt.answers_to(language) and satisfies(rt.version, version)]
    if not matching:
        raise PistonError(400, f"{language}-{version} runtime is unknown")
    return max(matching, key=lambda rt: parse_version(rt.version) or (0, 0, 0))


def job_spec_fields(body: Any, runtimes: list[LiveRuntime], settings: Settings) -> tuple[LiveRuntime, dict[str, Any]]:
    """The runtime and a JobSpec dict for a Piston request; PistonError (400) with upstream's message."""
    language, version, files = check_shape(body)
    runtime = find_runtime(runtimes, language, version)
    if not any((f.get("encoding") or "utf8") == "utf8" for f in files):
        raise PistonError(400, "files must include at least one utf8 encoded file")
    compile_limits = _limits(body, "compile", settings.default_compile, settings.max_compile)
    run_limits = _limits(body, "run", settings.default_run, settings.max_run)
    spec = {
        "language": runtime.language.name,
        "files": [_file(i, f) for i, f in enumerate(files)],
        "args": _args(body),
        "stdin": _stdin(body),
        "limits": run_limits,
        "compile_limits": compile_limits,
    }
    return runtime, spec


# ---------------------------------------------------------------------------------------------------- results


def _text(value: str, encoding: str) -> str:
    return base64.b64decode(value).decode("utf-8", "replace") if encoding == "base64" else value


def _output(stdout: str, stderr: str, chunks: list[tuple[str, str]] | None) -> str:
    if chunks:
        streamed = {name: "".join(t for s, t in chunks if s == name) for name in ("stdout", "stderr")}
        if streamed == {"stdout": stdout, "stderr": stderr}:
            return "".join(text for _, text in chunks)
    return stdout + stderr


def status_of(step: StepResult) -> str | None:
    if step.outcome == Outcome.OUTPUT_LIMIT and step.stderr_truncated and not step.stdout_truncated:
        return "EL"
    return STATUS[step.outcome]


def signal_of(step: StepResult) -> str | None:
    if step.outcome in (Outcome.TIME_LIMIT_CPU, Outcome.TIME_LIMIT_WALL, Outcome.OUTPUT_LIMIT, Outcome.MEMORY_LIMIT):
        return step.signal or "SIGKILL"  # upstream reports a limit kill as SIGKILL
    return step.signal


def stage(step: StepResult, chunks: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    stdout, stderr = _text(step.stdout, step.stdout_encoding), _text(step.stderr, step.stderr_encoding)
    status = status_of(step)
    message = {"OL": "stdout length exceeded", "EL": "stderr length exceeded"}.get(status or "", step.message)
    return {
        "stdout": stdout, "stderr": stderr, "output": _output(stdout, stderr, chunks),
        "code": step.exit_code, "signal": signal_of(step), "message": message, "status": status,
        "cpu_time": round(step.cpu_time_s * 1000), "wall_time": round(step.wall_time_s * 1000),
        "memory": step.memory_kib * 1024,
    }  # fmt: skip


def internal_stage(message: str) -> dict[str, Any]:
    """A stage that never ran because the job failed on our side (status XX)."""
    return {"stdout": "", "stderr": "", "output": "", "code": None, "signal": None, "message": message,
            "status": "XX", "cpu_time": 0, "wall_time": 0, "memory": 0}  # fmt: skip


def piston_result(result: JobResult, runtime: LiveRuntime, chunks: Chunks) -> dict[str, Any]:
    """The /execute answer. A failed compile is copied into `run`, as upstream does for old clients."""
    out: dict[str, Any] = {"language": runtime.name, "version": runtime.version}
    compiled = stage(result.compile, chunks.get("compile")) if result.compile is not None else None
    if compiled is not None:
        out["compile"] = compiled
    test = result.tests[0] if result.tests else None
    if test is not None and test.run is not None:
        out["run"] = stage(test.run, chunks.get(test.id))
    elif compiled is not None and compiled["status"] is not None:
        out["run"] = dict(compiled)
    else:
        failed = result.state in (JobState.FAILED, JobState.CANCELLED)
        out["run"] = internal_stage((result.message if failed else None) or "the program did not run")
    return out
