"""The engine end to end through the real sandbox: compile once, tests, checkers, files, verdicts."""

from __future__ import annotations

import base64
import concurrent.futures
from typing import Any

import pytest

from cellblock.engine import Engine
from cellblock.errors import LimitAboveMaximum, UnknownLanguage, ValidationFailed
from cellblock.models import JobSpec

pytestmark = pytest.mark.sandbox

SUM = "a, b = map(int, input().split())\nprint(a + b)\n"


def test_tests_get_one_verdict_each_and_the_job_the_first_failure(run_job: Any) -> None:
    result = run_job("python3", SUM, tests=[
        {"stdin": "1 2", "expected_output": "3"},
        {"stdin": "2 2", "expected_output": "5", "id": "bad"},
        {"stdin": "x", "expected_output": "1"},
    ])  # fmt: skip
    assert [t.verdict for t in result.tests] == ["accepted", "wrong_answer", "runtime_error"]
    assert result.tests[1].id == "bad"
    assert "expected '5', got '4'" in (result.tests[1].checker_message or "")
    assert result.verdict == "wrong_answer"
    assert result.state == "done"


def test_stop_on_first_failure_skips_the_rest(run_job: Any) -> None:
    result = run_job("python3", SUM, stop_on_first_failure=True, tests=[
        {"stdin": "1 1", "expected_output": "3"}, {"stdin": "1 2", "expected_output": "3"},
    ])  # fmt: skip
    assert [t.verdict for t in result.tests] == ["wrong_answer"]
    assert "stop_on_first_failure" in (result.message or "")


def test_compile_once_run_many(run_job: Any) -> None:
    source = '#include <stdio.h>\nint main(){long a,b;scanf("%ld %ld",&a,&b);printf("%ld\\n",a*b);}\n'
    result = run_job("c", source, tests=[{"stdin": f"{i} {i}", "expected_output": str(i * i)} for i in range(5)])
    assert result.compile is not None and result.compile.outcome == "ok"
    assert result.verdict == "accepted" and len(result.tests) == 5


def test_compilation_error_carries_the_compiler_output(run_job: Any) -> None:
    result = run_job("c", "int main() { return undefined_name; }\n")
    assert result.verdict == "compilation_error"
    assert result.tests == []
    assert "undefined_name" in result.compile.stderr


@pytest.mark.parametrize(
    ("kind", "expected", "actual", "verdict"),
    [
        ("judge0", "1 2\n3", "1 2  \n3\n\n", "accepted"),
        ("judge0", "1 2\n3", "1  2\n3", "wrong_answer"),
        ("exact", "a\n", "a\n", "accepted"),
        ("exact", "a", "a\n", "wrong_answer"),
        ("token", "1 2\n3", "1\n2 3", "accepted"),
        ("float", "0.333333", "0.3333331", "accepted"),
        ("float", "0.3", "0.31", "wrong_answer"),
    ],
)
def test_builtin_checkers(run_job: Any, kind: str, expected: str, actual: str, verdict: str) -> None:
    source = f"import sys\nsys.stdout.write({actual!r})\n"
    result = run_job("python3", source, checker={"kind": kind}, tests=[{"expected_output": expected}])
    assert result.verdict == verdict


CHECKER = """
import sys
inp, expected, actual = (open(p).read() for p in sys.argv[1:4])
want = int(inp.split()[0]) * 2
got = int(actual.split()[0])
print("got", got, "want", want)
sys.exit(0 if got == want else 1)
"""


def test_custom_checker_in_its_own_sandbox(run_job: Any) -> None:
    source = "n = int(input())\nprint(n * 2 if n != 3 else 7)\n"
    result = run_job("python3", source, checker={"kind": "custom", "language": "python3", "source": CHECKER},
                     tests=[{"stdin": "2", "expected_output": ""}, {"stdin": "3", "expected_output": ""}])  # fmt: skip
    assert [t.verdict for t in result.tests] == ["accepted", "wrong_answer"]
    assert result.tests[1].checker_message == "got 7 want 6"


def test_custom_checker_cannot_read_what_the_program_left_in_box(run_job: Any) -> None:
    source = "open('expected', 'w').write('planted')\nprint(1)\n"
    checker = "import os, sys\nprint(sorted(os.listdir('.')))\nsys.exit(0 if open('expected').read() == 'x' else 1)\n"
    result = run_job("python3", source, checker={"kind": "custom", "language": "python3", "source": checker},
                     tests=[{"expected_output": "x"}])  # fmt: skip
    assert result.verdict == "accepted", result.tests[0].checker_message


def test_output_files_are_returned_by_glob(run_job: Any) -> None:
    source = (
        "import os\nos.makedirs('out', exist_ok=True)\nopen('out/a.txt','w').write('A')\n"
        "open('b.bin','wb').write(b'\\xff\\x00')\n"
    )
    result = run_job("python3", source, output_files=["out/*.txt", "*.bin"])
    files = {f.name: f for f in result.files}
    assert files["out/a.txt"].content == "A" and files["out/a.txt"].encoding == "utf8"
    assert files["b.bin"].encoding == "base64"
    assert base64.b64decode(files["b.bin"].content) == b"\xff\x00"


def test_non_utf8_stdout_comes_back_as_base64(run_job: Any) -> None:
    result = run_job("python3", "import sys\nsys.stdout.buffer.write(b'\\xff\\xfehello')\n")
    run = result.tests[0].run
    assert run.stdout_encoding == "base64"
    assert base64.b64decode(run.stdout) == b"\xff\xfehello"


def test_stdout_over_the_cap_is_truncated_and_flagged(run_job: Any) -> None:
    result = run_job("python3", "print('x' * 5000)\n", limits={"output_kib": 1})
    run = result.tests[0].run
    assert result.verdict == "output_limit_exceeded"
    assert run.stdout_truncated and len(run.stdout) == 1024


def test_base64_source_and_args(run_job: Any, engine: Engine) -> None:
    code = base64.b64encode(b"import sys\nprint(' '.join(sys.argv[1:]))\n").decode()
    spec = JobSpec.model_validate({"language": "py", "args": ["a", "b c"],
                                   "files": [{"name": "m.py", "content": code, "encoding": "base64"}]})  # fmt: skip
    result = engine.run(spec)
    assert result.tests[0].run.stdout == "a b c\n"


def test_extra_files_are_importable(engine: Engine) -> None:
    spec = JobSpec.model_validate({"language": "python3", "files": [
        {"name": "main.py", "content": "from lib.util import f\nprint(f())\n"},
        {"name": "lib/util.py", "content": "def f():\n    return 42\n"},
    ]})  # fmt: skip
    assert engine.run(spec).tests[0].run.stdout == "42\n"


@pytest.mark.parametrize(
    ("fields", "error", "field"),
    [
        ({"language": "cobol-9000"}, UnknownLanguage, "language"),
        ({"files": [{"name": "main.py", "content": "   \n"}]}, ValidationFailed, "files[0].content"),
        (
            {"files": [{"name": "main.py", "content": "print(1)"}, {"name": "../x", "content": "1"}]},
            ValidationFailed,
            "files[1].name",
        ),
        (
            {"files": [{"name": "main.py", "content": "print(1)"}, {"name": "/etc/x", "content": "1"}]},
            ValidationFailed,
            "files[1].name",
        ),
        ({"files": [{"name": "main.py", "content": "\udcff"}]}, ValidationFailed, "files[0].content"),
        ({"limits": {"cpu_time_s": 10_000}}, LimitAboveMaximum, "limits.cpu_time_s"),
        ({"compile_limits": {"memory_mib": 1 << 20}}, LimitAboveMaximum, "compile_limits.memory_mib"),
        ({"output_files": ["../../etc/*"]}, ValidationFailed, "output_files[0]"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(engine: Engine, settings: Any, fields: dict[str, Any],
                                                   error: type[Exception], field: str) -> None:  # fmt: skip
    spec = JobSpec.model_validate({"language": "python3", "files": [{"name": "main.py", "content": "print(1)"}],
                                   **fields})  # fmt: skip
    with pytest.raises(error) as caught:
        engine.run(spec)
    assert caught.value.field == field  # type: ignore[attr-defined]
    slots = settings.data_dir / "slots"
    assert not slots.exists() or not any(slots.iterdir())


def test_unknown_language_suggests_the_closest(engine: Engine) -> None:
    spec = JobSpec.model_validate({"language": "pyhton3", "files": [{"name": "m", "content": "print(1)"}]})
    with pytest.raises(UnknownLanguage) as caught:
        engine.run(spec)
    assert "python3" in caught.value.message and "Did you mean" in caught.value.message


def test_parallel_jobs_use_separate_slots_and_do_not_interfere(engine: Engine) -> None:
    source = "import os, time\nprint(os.getuid(), input())\ntime.sleep(0.3)\nopen('mine','w').write(input())\n"

    def one(i: int) -> Any:
        spec = JobSpec.model_validate({"language": "python3", "files": [{"name": "m", "content": source}],
                                       "stdin": f"{i}\n{i}\n", "output_files": ["mine"]})  # fmt: skip
        return engine.run(spec)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    for i, result in enumerate(results):
        assert result.verdict == "accepted"
        assert result.tests[0].run.stdout.split()[1] == str(i)
        assert [f.content for f in result.files] == [str(i)]
