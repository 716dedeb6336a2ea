"""What the functional group's language TOMLs promise beyond tests/e2e/test_languages.py.

Runtimes whose own heap or stack would otherwise be fixed follow the job's memory limit (SBCL's dynamic space,
SWI-Prolog's stacks, Gforth's dictionary, Algol 68 Genie's heap); runtimes with helper threads run under a
limit of one process (their extra_processes); Racket's start-up memory is not counted against the program;
SWI-Prolog's load errors are runtime errors, not a silent exit 0.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.sandbox

MIB = 1024 * 1024


def accepted_stdout(result: Any) -> str:
    assert result.verdict == "accepted", result
    stdout: str = result.tests[0].run.stdout
    return stdout


# --- Common Lisp (SBCL) -------------------------------------------------------------------------------------


@pytest.mark.parametrize("memory_mib", [64, 512])
def test_sbcl_dynamic_space_follows_the_memory_limit(run_job: Any, memory_mib: int) -> None:
    result = run_job("commonlisp", "(print (sb-ext:dynamic-space-size))", limits={"memory_mib": memory_mib})
    assert accepted_stdout(result).split() == [str(memory_mib * MIB)]


def test_sbcl_heap_exhaustion_is_its_own_runtime_error(run_job: Any) -> None:
    source = """
(defvar *keep* (loop for i below 120
                     collect (make-array (* 1024 1024) :element-type '(unsigned-byte 8) :initial-element 1)))
(print (length *keep*))
"""
    result = run_job("commonlisp", source, limits={"memory_mib": 64})
    assert result.verdict == "runtime_error", result
    assert "Heap exhausted" in result.tests[0].run.stderr + result.tests[0].run.stdout


def test_sbcl_deep_recursion_fits_its_control_stack(run_job: Any) -> None:
    source = '(defun f (n) (if (= n 0) 0 (+ 1 (f (- n 1)))))\n(format t "~D~%" (f 1000000))\n'
    assert accepted_stdout(run_job("commonlisp", source)) == "1000000\n"


# --- Threads: one process allowed to the user ---------------------------------------------------------------

ONE_PROCESS = {
    "haskell": 'main = putStrLn "ok"',
    "commonlisp": '(sb-ext:gc :full t)\n(write-line "ok")',
    "guile": '(gc)\n(display "ok")\n(newline)',
    "swi-prolog": ":- initialization(main).\nmain :- garbage_collect, writeln(ok).",
}


@pytest.mark.parametrize("name", sorted(ONE_PROCESS))
def test_runtime_threads_do_not_count_against_a_one_process_limit(run_job: Any, name: str) -> None:
    result = run_job(name, ONE_PROCESS[name], limits={"processes": 1}, compile_limits={"processes": 1})
    assert accepted_stdout(result) == "ok\n"
    assert result.tests[0].run.stderr == ""


# --- Racket ------------------------------------------------------------------------------------------------


def test_racket_start_up_memory_is_not_the_programs(run_job: Any) -> None:
    # `#lang racket` peaks at 96 MiB before the program does anything; extra_memory_mib covers it.
    result = run_job("racket", '#lang racket\n(displayln "ok")\n', limits={"memory_mib": 32})
    assert accepted_stdout(result) == "ok\n"


# --- SWI-Prolog --------------------------------------------------------------------------------------------


def test_swi_prolog_stack_limit_follows_the_memory_limit(run_job: Any) -> None:
    source = ":- initialization(main).\nmain :- current_prolog_flag(stack_limit, L), writeln(L).\n"
    result = run_job("swi-prolog", source, limits={"memory_mib": 128})
    assert accepted_stdout(result) == f"{128 * MIB}\n"


def test_swi_prolog_error_while_loading_is_a_runtime_error(run_job: Any) -> None:
    result = run_job("swi-prolog", ":- initialization(main).\nmain :- no_such_predicate(1).\n")
    assert result.verdict == "runtime_error", result
    run = result.tests[0].run
    assert run.exit_code == 1
    assert "no_such_predicate/1" in run.stderr


def test_swi_prolog_does_not_read_stdin_as_queries(run_job: Any) -> None:
    # Without -t halt the top level would read the rest of stdin as queries and print to stdout.
    source = ":- initialization(main).\nmain :- read_term(T, []), print(T), nl.\n"
    result = run_job("swi-prolog", source, stdin="first(term).\nwrite(leak), nl.\n")
    assert accepted_stdout(result) == "first(term)\n"


# --- Gforth and Algol 68 Genie -------------------------------------------------------------------------------


def test_gforth_dictionary_follows_the_memory_limit(run_job: Any) -> None:
    source = "create big 100000000 allot  big 100000000 1 fill  .( ok) cr\n"
    assert accepted_stdout(run_job("forth", source, limits={"memory_mib": 256})) == "ok\n"


def test_a68g_heap_follows_the_memory_limit(run_job: Any) -> None:
    # The default heap cannot hold these 5 000 000 INTs ("insufficient memory").
    source = "BEGIN [1:5000000] INT a; FOR i TO UPB a DO a[i] := i OD; print((whole(a[UPB a], 0), newline)) END\n"
    assert accepted_stdout(run_job("algol68", source, limits={"memory_mib": 256})) == "5000000\n"
