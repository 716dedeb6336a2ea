"""A JobSpec → a JobResult: write files, compile once, run every test, check, collect output files.

The engine holds one slot for the whole job. The compile step and every test run are separate sandboxed
runs (fresh namespaces and cgroups each) over the same /box, so the tests run the binary compiled once.
A custom checker runs in its own fresh /box in the same slot, never in the one the user's program touched.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cellblock.checkers import check
from cellblock.config import Settings
from cellblock.errors import CellblockError, InternalError, SandboxFailure
from cellblock.files import collect_outputs, encode_output, write_files
from cellblock.languages.registry import Language, Registry, expand
from cellblock.models import (
    BuiltinChecker,
    CustomChecker,
    JobResult,
    JobSpec,
    JobState,
    Limits,
    Outcome,
    SourceFile,
    StepResult,
    TestCase,
    TestResult,
    Verdict,
)
from cellblock.sandbox.host import Sandbox, SandboxHost
from cellblock.sandbox.spec import LiveInput, RawResult, RunLimits, RunSpec
from cellblock.validation import ResolvedLimits, ValidJob, validate_job

log = logging.getLogger(__name__)

SELF_TEST_CPU_S = 10.0  # the self-test's CPU limit (wall: twice that); within the default maxima

OUTCOME_VERDICT = {
    Outcome.OK: Verdict.ACCEPTED,
    Outcome.RUNTIME_ERROR: Verdict.RUNTIME_ERROR,
    Outcome.SIGNALED: Verdict.RUNTIME_ERROR,
    Outcome.TIME_LIMIT_CPU: Verdict.TIME_LIMIT_EXCEEDED,
    Outcome.TIME_LIMIT_WALL: Verdict.TIME_LIMIT_EXCEEDED,
    Outcome.MEMORY_LIMIT: Verdict.MEMORY_LIMIT_EXCEEDED,
    Outcome.OUTPUT_LIMIT: Verdict.OUTPUT_LIMIT_EXCEEDED,
    Outcome.INTERNAL: Verdict.INTERNAL_ERROR,
}
CHECKER_FILES = ("input", "expected", "actual")


class JobObserver(Protocol):
    """What a caller (the worker) sees of a job while it runs. Every method must be cheap and never raise."""

    def step_started(self, label: str) -> None:
        """A sandboxed step begins: "compile" or a test id."""

    def output(self, stream: str, data: bytes) -> None:
        """Bytes of the current step's "stdout" or "stderr", as produced."""

    def step_finished(self, label: str, step: StepResult) -> None: ...

    def cancelled(self) -> bool:
        """True once the job should stop; the running step is killed and the job ends as cancelled."""


class _StepView:
    """Adapts a JobObserver to the sandbox's RunObserver for one step."""

    def __init__(self, observer: JobObserver) -> None:
        self._observer = observer

    def output(self, stream: str, data: bytes) -> None:
        self._observer.output(stream, data)

    def cancelled(self) -> bool:
        return self._observer.cancelled()


def now() -> datetime:
    return datetime.now(UTC)


def to_step_result(raw: RawResult) -> StepResult:
    stdout, out_enc = encode_output(raw.stdout)
    stderr, err_enc = encode_output(raw.stderr)
    return StepResult(
        outcome=Outcome(raw.outcome),
        exit_code=raw.exit_code,
        signal=raw.signal,
        cpu_time_s=raw.cpu_time_s,
        wall_time_s=raw.wall_time_s,
        memory_kib=raw.memory_kib,
        stdout=stdout,
        stderr=stderr,
        stdout_encoding=out_enc,
        stderr_encoding=err_enc,
        stdout_truncated=raw.stdout_truncated,
        stderr_truncated=raw.stderr_truncated,
        message=raw.message,
        isolation=raw.isolation,  # a models.ISOLATIONS value (host.Sandbox.run); the note stays in the log
    )


def run_limits(limits: ResolvedLimits, language: Language, *, compiling: bool) -> RunLimits:
    """User limits plus the language's documented overheads (threads, runtime memory, start-up CPU of a run)."""
    tweaks = language.limits
    start_up_s = 0.0 if compiling else tweaks.extra_cpu_time_s
    return RunLimits(
        cpu_time_s=limits.cpu_time_s + start_up_s,
        wall_time_s=limits.wall_time_s + start_up_s,
        memory_kib=(limits.memory_mib + tweaks.extra_memory_mib) * 1024,
        processes=limits.processes + tweaks.extra_processes,
        output_bytes=limits.output_kib * 1024,
        file_size_bytes=max(limits.file_size_kib * 1024, tweaks.min_file_size_mib << 20),
        address_space=tweaks.compile_address_space if compiling else tweaks.address_space,
    )


class JobCancelled(Exception):
    """The observer asked to stop; the job ends in state cancelled."""


class _Steps:
    """Runs the job's steps in its slot, telling the observer, and stops the job once it is cancelled."""

    def __init__(self, sandbox: Sandbox, observer: JobObserver | None) -> None:
        self.sandbox = sandbox
        self.observer = observer
        self.live_input: LiveInput | None = None

    def run(self, label: str, spec: RunSpec) -> RawResult:
        if self.observer is None:
            return self.sandbox.run(spec)
        if self.observer.cancelled():
            raise JobCancelled
        self.observer.step_started(label)
        raw = self.sandbox.run(spec, _StepView(self.observer))
        if self.observer.cancelled():
            raise JobCancelled
        return raw

    def finished(self, label: str, step: StepResult) -> None:
        if self.observer is not None:
            self.observer.step_finished(label, step)


class Engine:
    def __init__(self, settings: Settings, registry: Registry, host: SandboxHost) -> None:
        self.settings = settings
        self.registry = registry
        self.host = host

    def run(
        self,
        spec: JobSpec,
        *,
        job_id: str | None = None,
        observer: JobObserver | None = None,
        created_at: datetime | None = None,
        live_input: LiveInput | None = None,
    ) -> JobResult:
        """Validate, then execute. User errors raise (before anything runs); program failures are verdicts."""
        job = validate_job(spec, self.settings, self.registry)
        result = JobResult(
            id=job_id or uuid.uuid4().hex,
            state=JobState.RUNNING,
            language=job.language.name,
            created_at=created_at or now(),
            started_at=now(),
        )
        try:
            with self.host.slot() as sandbox, sandbox.workspace() as box:
                steps = _Steps(sandbox, observer)
                steps.live_input = live_input if spec.interactive else None
                self._execute(job, steps, box, result)
        except JobCancelled:
            result.state, result.verdict, result.message = JobState.CANCELLED, None, "cancelled"
        except CellblockError as exc:
            if not isinstance(exc, InternalError):
                raise
            # Only our sandbox's own failures are logged in words: other messages may quote a custom checker's
            # output, and no user data goes in a log line (the user gets the message in the result).
            detail = exc.message if isinstance(exc, SandboxFailure) else exc.code
            log.error("job %s failed internally: %s", result.id, detail)
            result.state, result.verdict, result.message = JobState.FAILED, Verdict.INTERNAL_ERROR, exc.message
        result.finished_at = now()
        return result

    def _execute(self, job: ValidJob, steps: _Steps, box: Path, result: JobResult) -> None:
        lang, spec = job.language, job.spec
        write_files(box, job.files)
        source = job.files[0][0]
        if lang.compile is not None:
            limits = run_limits(job.compile_limits, lang, compiling=True)
            argv = expand(
                lang.compile,
                source=source,
                memory_mib=job.compile_limits.memory_mib,
                compile_options=spec.compile_options,
            )
            compile_spec = RunSpec(
                argv=argv,
                limits=limits,
                env=lang.compile_environment(job.compile_limits.memory_mib),
                ro_binds=lang.ro_binds,
            )
            step = to_step_result(steps.run("compile", compile_spec))
            result.compile = step
            steps.finished("compile", step)
            if step.outcome != Outcome.OK:
                result.state, result.verdict = JobState.DONE, Verdict.COMPILATION_ERROR
                return
        tests = spec.tests or [TestCase(stdin=spec.stdin or "")]
        limits = run_limits(job.run_limits, lang, compiling=False)
        run_argv = expand(lang.run, source=source, memory_mib=job.run_limits.memory_mib, compile_options=[])
        for index, test in enumerate(tests, start=1):
            test_id = test.id or str(index)
            run_spec = RunSpec(
                argv=run_argv + (test.args if test.args is not None else spec.args),
                limits=limits,
                stdin=test.stdin.encode(),
                env=lang.run_environment(job.run_limits.memory_mib),
                ro_binds=lang.ro_binds,
                network=spec.network,
                merge_stderr=spec.merge_stderr,
                live_input=steps.live_input,  # interactive jobs: stdin and signals as they arrive (one run)
                prewarm=lang.prewarm,
                prewarm_modules=tuple(lang.prewarm_modules),
            )
            step, verdict, message = self._run_test(job, steps, test_id, test, run_spec)
            result.tests.append(TestResult(id=test_id, verdict=verdict, run=step, checker_message=message))
            if verdict != Verdict.ACCEPTED and spec.stop_on_first_failure and index < len(tests):
                result.message = f"stopped after test {test_id} (stop_on_first_failure)"
                break
        result.verdict = next((t.verdict for t in result.tests if t.verdict != Verdict.ACCEPTED), Verdict.ACCEPTED)
        result.files = collect_outputs(box, spec.output_files, self.settings.max_output_files_kib * 1024)
        result.state = JobState.DONE

    def _run_test(
        self, job: ValidJob, steps: _Steps, test_id: str, test: TestCase, run_spec: RunSpec
    ) -> tuple[StepResult, Verdict, str | None]:
        """One test, run `spec.runs` times (Judge0's number_of_runs): the last run's output and verdict with the
        average time and memory of the runs made; it stops at the first run that is not accepted."""
        made: list[StepResult] = []
        for _ in range(job.spec.runs):
            raw = steps.run(test_id, run_spec)
            step = to_step_result(raw)
            steps.finished(test_id, step)
            verdict, message = self._judge(job, steps.sandbox, test, raw, step)
            made.append(step)
            if verdict != Verdict.ACCEPTED:
                break
        if len(made) > 1:
            count = len(made)
            step = step.model_copy(update={
                "cpu_time_s": sum(s.cpu_time_s for s in made) / count,
                "wall_time_s": sum(s.wall_time_s for s in made) / count,
                "memory_kib": round(sum(s.memory_kib for s in made) / count),
            })  # fmt: skip
        return step, verdict, message

    def _judge(
        self, job: ValidJob, sandbox: Sandbox, test: TestCase, raw: RawResult, step: StepResult
    ) -> tuple[Verdict, str | None]:
        verdict = OUTCOME_VERDICT[step.outcome]
        if verdict != Verdict.ACCEPTED or test.expected_output is None:
            return verdict, None
        actual = raw.stdout.decode("utf-8", "replace")
        checker = job.spec.checker
        if isinstance(checker, BuiltinChecker):
            ok, message = check(checker, test.expected_output, actual)
        else:
            ok, message = self._custom_check(job, checker, sandbox, test, raw.stdout)
        return (Verdict.ACCEPTED if ok else Verdict.WRONG_ANSWER), message

    def _custom_check(
        self, job: ValidJob, checker: CustomChecker, sandbox: Sandbox, test: TestCase, actual: bytes
    ) -> tuple[bool, str | None]:
        """Run the checker program in its own fresh box: exit 0 accepted, 1 wrong answer, else internal."""
        lang = job.checker_language
        assert lang is not None  # validate_job resolved it
        with sandbox.workspace("checker") as box:
            source = lang.main_file_name(checker.source)
            write_files(
                box,
                [
                    (source, checker.source.encode()),
                    ("input", test.stdin.encode()),
                    ("expected", (test.expected_output or "").encode()),
                    ("actual", actual),
                ],
            )
            # The checker gets the compile defaults (it is trusted to be small), with a small output cap.
            limits = self.settings.default_compile.model_copy(update={"output_kib": 64})
            if lang.compile is not None:
                argv = expand(lang.compile, source=source, memory_mib=limits.memory_mib, compile_options=[])
                raw = sandbox.run(
                    RunSpec(
                        argv=argv,
                        limits=run_limits(limits, lang, compiling=True),
                        env=lang.compile_environment(limits.memory_mib),
                        ro_binds=lang.ro_binds,
                        box_dir=box,
                    )
                )
                if raw.outcome != Outcome.OK:
                    raise InternalError(
                        "the custom checker does not compile: " + raw.stderr.decode("utf-8", "replace")[:500]
                    )
            argv = expand(lang.run, source=source, memory_mib=limits.memory_mib, compile_options=[])
            raw = sandbox.run(
                RunSpec(
                    argv=[*argv, *CHECKER_FILES],
                    limits=run_limits(limits, lang, compiling=False),
                    env=lang.run_environment(limits.memory_mib),
                    ro_binds=lang.ro_binds,
                    box_dir=box,
                )
            )
        message = raw.stdout.decode("utf-8", "replace").strip()[:1000] or None
        if raw.outcome == Outcome.OK:
            return True, message
        if raw.outcome == Outcome.RUNTIME_ERROR and raw.exit_code == 1:
            return False, message
        raise InternalError(f"the custom checker failed ({raw.message}): {raw.stderr.decode('utf-8', 'replace')[:500]}")

    def self_test(self, language: Language) -> tuple[bool, str]:
        """Run the language's echo program through the real sandbox. (passed, reason)."""
        stdin = language.self_test.stdin
        spec = JobSpec(
            language=language.name,
            files=[SourceFile(name=language.source_file, content=language.self_test.source)],
            tests=[TestCase(stdin=stdin, expected_output=stdin)],
            checker=BuiltinChecker(kind="exact"),
            # It asks "does the toolchain work?", not "is it fast?": a JVM language that starts in 1.8 s of CPU
            # (Clojure) met the default 2 s limit on a loaded machine and was reported failing.
            limits=Limits(cpu_time_s=SELF_TEST_CPU_S, wall_time_s=2 * SELF_TEST_CPU_S),
        )
        result = self.run(spec)
        if result.verdict == Verdict.ACCEPTED:
            return True, "ok"
        step = (
            result.compile
            if result.verdict == Verdict.COMPILATION_ERROR
            else (result.tests[0].run if result.tests else None)
        )
        detail = (step.stderr or step.stdout or step.message or "") if step else (result.message or "")
        return False, f"{result.verdict}: {detail.strip()[:300]}"
