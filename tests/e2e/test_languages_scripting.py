"""What the scripting languages' TOMLs promise beyond tests/e2e/test_languages.py.

PyPy's garbage collector is sized for a normal cache, SQLite starts every test with an empty database, Raku's
module precompilation stays in the box, the runtimes that start their own threads or helper processes (R,
Octave, Raku) run under a one-process limit, CoffeeScript runs on Node with the heap cap of javascript.toml,
and plain text is printed as it is.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.sandbox

PYPY_GARBAGE = """t = 0
for i in range(300):
    x = [i] * 1_000_000  # 8 MB of garbage per step, 2.4 GB in all
    t += len(x)
print(t)
"""


def test_pypy3_collects_garbage_before_the_memory_limit(run_job: Any) -> None:
    # With the nursery PyPy derives from this VM's reported 480 MiB L3 cache, this loop peaked at 2 GiB.
    result = run_job("pypy3", PYPY_GARBAGE, limits={"memory_mib": 128})
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "300000000\n"


def test_sqlite_starts_every_test_with_a_fresh_database(run_job: Any) -> None:
    script = "CREATE TABLE t(x);\nINSERT INTO t VALUES (1);\nSELECT count(*) FROM t;\n"
    result = run_job("sqlite", script, tests=[{"stdin": ""}, {"stdin": ""}])
    assert result.verdict == "accepted", result
    assert [t.run.stdout for t in result.tests] == ["1\n", "1\n"]


def test_sqlite_stops_at_the_first_error(run_job: Any) -> None:
    result = run_job("sqlite", "SELECT 1;\nSELECT * FROM missing;\nSELECT 2;\n")
    assert result.verdict == "runtime_error"
    run = result.tests[0].run
    assert (run.stdout, run.exit_code) == ("1\n", 1)
    assert "no such table: missing" in run.stderr


def test_raku_module_precompilation_stays_in_the_box(run_job: Any) -> None:
    result = run_job("raku", 'use Test;\nsay "ok";\nsay "/box/.raku/precomp".IO.d;\n')
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "ok\nTrue\n"


@pytest.mark.parametrize(
    ("name", "source"),
    [("r", 'cat("hello\\n")\n'), ("octave", 'disp("hello")\n'), ("raku", 'say "hello";\n')],
)
def test_runtime_with_its_own_threads_runs_under_a_one_process_limit(run_job: Any, name: str, source: str) -> None:
    # Measured without the allowance: R's start script hangs, Octave aborts, MoarVM exits 13.
    result = run_job(name, source, limits={"processes": 1})
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "hello\n"


def test_coffeescript_heap_can_use_most_of_the_memory_limit(run_job: Any) -> None:
    source = "keep = []\nfor i in [0...200]\n  keep.push new Array(128 * 1024).fill(i)\nconsole.log keep.length\n"
    result = run_job("coffeescript", source, limits={"memory_mib": 256})
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "200\n"


def test_plain_text_is_printed_as_it_is(run_job: Any) -> None:
    text = "  spaces, a tab\there,\n\nno newline at the end"
    result = run_job("plaintext", text, stdin="ignored\n")
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == text
