"""Every registered language, end to end through the real sandbox.

Data-driven over `Registry.load().languages`: the self-test (echo stdin), the toolchain's version, a program
that adds two numbers from stdin (accepted on several tests), a runtime error (its exit code and message), and
for compiled languages a compilation error whose compiler message reaches `result.compile`. The programs are data,
one file per language in tests/e2e/programs/<name>.toml (the fields of `Programs`); a language added without
that file fails `test_every_language_has_its_programs`. A language that cannot express a program (plain text
cannot add two numbers or fail) leaves it out and says why in `absent`.

Then what each TOML promises beyond that: Java takes any public class name, the JVM and Node get most of the
memory limit as heap and a deep stack, Go refuses a non-main package, tsc type-checks (with Node's types).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cellblock.engine import Engine
from cellblock.languages.registry import Registry

pytestmark = pytest.mark.sandbox

LANGUAGES = Registry.load().languages
NAMES = [lang.name for lang in LANGUAGES]
COMPILED = [lang.name for lang in LANGUAGES if lang.compiled]

UNDEFINED = "undefined_name_xyz"
SUM_TESTS = [
    {"id": "small", "stdin": "1 2\n", "expected_output": "3\n"},
    {"id": "lines", "stdin": "-5\n12\n", "expected_output": "7\n"},
    {"id": "64-bit", "stdin": "1000000000000 2345678901234", "expected_output": "3345678901234\n"},
]


@dataclass(frozen=True)
class Programs:
    sum: str | None = None  # reads two integers (any whitespace) and prints their sum
    error: str | None = None  # fails at run time, printing "boom" to stderr
    error_exit: int | None = None  # the exit code that failure gives
    compile_error: str | None = None  # uses UNDEFINED; compiled languages only
    compile_error_file: str | None = None  # where compile_error goes when not the main file (a compile script)
    version: str | None = None  # prints the runtime's own version, to compare with the host's toolchain
    absent: str | None = None  # why `sum` or `error` is left out (only for a language that cannot express it)


PROGRAMS_DIR = Path(__file__).with_name("programs")


def load_programs() -> dict[str, Programs]:
    """tests/e2e/programs/<name>.toml, one per language: the fields of `Programs`."""
    return {path.stem: Programs(**tomllib.loads(path.read_text())) for path in sorted(PROGRAMS_DIR.glob("*.toml"))}


PROGRAMS = load_programs()
WITH_VERSION = [name for name in NAMES if name in PROGRAMS and PROGRAMS[name].version is not None]
WITH_SUM = [name for name in NAMES if name in PROGRAMS and PROGRAMS[name].sum is not None]
WITH_ERROR = [name for name in NAMES if name in PROGRAMS and PROGRAMS[name].error is not None]


def test_every_language_has_its_programs() -> None:
    assert sorted(PROGRAMS) == sorted(NAMES)
    for lang in LANGUAGES:
        programs = PROGRAMS[lang.name]
        assert (programs.compile_error is not None) == lang.compiled, lang.name
        assert programs.compile_error is None or UNDEFINED in programs.compile_error
        assert (programs.error is None) == (programs.error_exit is None), lang.name
        assert (programs.sum is None or programs.error is None) == (programs.absent is not None), lang.name


@pytest.mark.parametrize("name", NAMES)
def test_self_test_passes(engine: Engine, registry: Registry, name: str) -> None:
    passed, reason = engine.self_test(registry.get(name))
    assert (passed, reason) == (True, "ok")


@pytest.mark.parametrize("name", NAMES)
def test_host_version_is_read_from_the_toolchain(registry: Registry, name: str) -> None:
    lang = registry.get(name)
    assert lang.installed()
    version = lang.host_version()
    assert version is not None and re.fullmatch(r"\d+(\.\d+)+", version), version


@pytest.mark.parametrize("name", WITH_VERSION)
def test_programs_run_on_the_toolchain_whose_version_we_report(run_job: Any, registry: Registry, name: str) -> None:
    # The version comes from the host's toolchain on the sandbox's PATH (/usr); the program runs inside the
    # sandbox. A toolchain shadowed elsewhere (~/.cargo, pyenv) would make the two disagree.
    result = run_job(name, PROGRAMS[name].version)
    assert result.verdict == "accepted", result
    assert registry.get(name).host_version() in result.tests[0].run.stdout


@pytest.mark.parametrize("name", WITH_SUM)
def test_sum_of_two_numbers_is_accepted(run_job: Any, registry: Registry, name: str) -> None:
    result = run_job(name, PROGRAMS[name].sum, tests=SUM_TESTS)
    assert [(t.id, t.verdict) for t in result.tests] == [(t["id"], "accepted") for t in SUM_TESTS], result
    assert result.verdict == "accepted"
    assert [t.run.stdout for t in result.tests] == [t["expected_output"] for t in SUM_TESTS]
    if registry.get(name).compiled:
        assert result.compile is not None and result.compile.outcome == "ok"
    else:
        assert result.compile is None


@pytest.mark.parametrize("name", WITH_ERROR)
def test_runtime_error_reports_the_exit_code_and_the_message(run_job: Any, name: str) -> None:
    result = run_job(name, PROGRAMS[name].error)
    assert result.verdict == "runtime_error"
    run = result.tests[0].run
    assert (run.outcome, run.exit_code, run.signal) == ("runtime_error", PROGRAMS[name].error_exit, None), run
    assert "boom" in run.stderr


@pytest.mark.parametrize("name", COMPILED)
def test_compilation_error_carries_the_compiler_message(run_job: Any, name: str) -> None:
    programs = PROGRAMS[name]
    if programs.compile_error_file is None:
        result = run_job(name, programs.compile_error)
    else:
        script = {"name": programs.compile_error_file, "content": programs.compile_error}
        result = run_job(name, "", files=[{"name": "main", "content": "echo never run"}, script])
    assert result.verdict == "compilation_error"
    assert result.tests == []
    assert result.compile is not None and result.compile.outcome != "ok"
    assert UNDEFINED in result.compile.stderr + result.compile.stdout, result.compile


# --- Java: any class name ------------------------------------------------------------------------------------

JAVA_NAMED = """import java.lang.invoke.MethodHandles;
import java.util.Scanner;

{header} {{
    public static void main(String[] args) {{
        Scanner in = new Scanner(System.in);
        long sum = in.nextLong() + in.nextLong();
        System.out.println(MethodHandles.lookup().lookupClass().getName() + " " + sum);
    }}
}}
"""


@pytest.mark.parametrize(
    ("header", "class_name"),
    [
        ("public class Solution", "Solution"),
        ("public final class Xyz", "Xyz"),
        ("public abstract class Abs", "Abs"),
        ("public strictfp class Sfp", "Sfp"),
        ("final public class Fp", "Fp"),
        ('@SuppressWarnings("unused")\npublic class Annotated', "Annotated"),
        ("public class Привет_Ünï$1", "Привет_Ünï$1"),
        ("class NotPublic", "NotPublic"),
    ],
)
def test_java_takes_any_class_name(run_job: Any, header: str, class_name: str) -> None:
    result = run_job("java", JAVA_NAMED.format(header=header), stdin="40 2")
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == f"{class_name} 42\n"


def test_java_public_class_after_a_helper_class(run_job: Any) -> None:
    source = (
        "class Helper {\n    public class Inner {}\n    static int twice(int x) { return 2 * x; }\n}\n\n"
        "public class Real {\n    public static void main(String[] args) {\n"
        "        System.out.println(Helper.twice(21));\n    }\n}\n"
    )
    result = run_job("java", source)
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "42\n"


def test_java_class_name_too_long_for_a_file_is_a_compilation_error(run_job: Any) -> None:
    result = run_job("java", JAVA_NAMED.format(header="public class " + "A" * 200))
    assert result.verdict == "compilation_error"
    assert "should be declared in a file named" in result.compile.stderr


# --- Runtimes that manage their own memory ------------------------------------------------------------------

JAVA_HEAP = """import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

public class Main {
    public static void main(String[] args) {
        List<int[]> keep = new ArrayList<>();
        for (int i = 0; i < 200; i++) {  // 200 MiB, all live
            int[] block = new int[256 * 1024];
            Arrays.fill(block, i);
            keep.add(block);
        }
        System.out.println(keep.size());
    }
}
"""
JS_HEAP = """const keep = [];
for (let i = 0; i < 200; i++) keep.push(new Array(128 * 1024).fill(i));  // ~200 MiB of live heap
console.log(keep.length);
"""


@pytest.mark.parametrize(("name", "source"), [("java", JAVA_HEAP), ("javascript", JS_HEAP)])
def test_runtime_heap_can_use_most_of_the_memory_limit(run_job: Any, name: str, source: str) -> None:
    # The box has no /sys: the JVM and V8 would size their heaps from the host's RAM. Ours tell them the limit.
    result = run_job(name, source, limits={"memory_mib": 256})
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "200\n"


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [("java", JAVA_HEAP, "java.lang.OutOfMemoryError: Java heap space"), ("javascript", JS_HEAP, "heap out of memory")],
)
def test_runtime_out_of_heap_is_its_own_error(run_job: Any, name: str, source: str, message: str) -> None:
    # The heap is capped at the limit and the runtime's overhead has its own allowance (extra_memory_mib), so
    # the runtime's own out-of-memory error fires before the memory cgroup would kill it: a runtime error that
    # says why, on stderr.
    result = run_job(name, source, limits={"memory_mib": 128})
    assert result.verdict == "runtime_error", result
    assert message in result.tests[0].run.stderr


JAVA_DEEP = """public class Main {
    static int depth(int n) { return n == 0 ? 0 : 1 + depth(n - 1); }
    public static void main(String[] args) { System.out.println(depth(200000)); }
}
"""
JS_DEEP = "function depth(n) { return n === 0 ? 0 : 1 + depth(n - 1); }\nconsole.log(depth(200000));\n"


@pytest.mark.parametrize(("name", "source"), [("java", JAVA_DEEP), ("javascript", JS_DEEP)])
def test_deep_recursion_fits_the_stack(run_job: Any, name: str, source: str) -> None:
    # 200 000 frames: far beyond the JVM's default 1 MiB thread stack and V8's default ~1 MiB.
    result = run_job(name, source)
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "200000\n"


# --- Go and TypeScript compile checks --------------------------------------------------------------------------


def test_go_non_main_package_is_a_compilation_error(run_job: Any) -> None:
    result = run_job("go", 'package notmain\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hi")\n}\n')
    assert result.verdict == "compilation_error"
    assert "main package" in result.compile.stderr


def test_go_net_and_os_user_build_and_run(run_job: Any) -> None:
    # Packages with cgo variants: built against Debian's prebuilt standard library, and user.Current() resolves
    # the box's own user through libc.
    source = (
        'package main\n\nimport (\n\t"fmt"\n\t"net"\n\t"os/user"\n)\n\n'
        'func main() {\n\tu, _ := user.Current()\n\tfmt.Println(net.ParseIP("10.0.0.1"), u.Username)\n}\n'
    )
    result = run_job("go", source)
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "10.0.0.1 runner\n"


def test_typescript_type_errors_are_compilation_errors(run_job: Any) -> None:
    result = run_job("typescript", 'const n: number = "text";\nconsole.log(n);\n')
    assert result.verdict == "compilation_error"
    assert "TS2322" in result.compile.stdout


def test_typescript_knows_node_apis(run_job: Any) -> None:
    source = 'process.stdout.write(require("os").EOL.length + " " + Buffer.from("abc").length + "\\n");\n'
    result = run_job("typescript", source)
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "1 3\n"


SLOW_START_TOML = """
name = "slowstart"
display_name = "Slow start (a runtime that needs more than the default CPU limit to start)"
debian_packages = ["python3"]
version_command = ["python3", "--version"]
source_file = "main.py"
run = ["python3", "{source}"]
[self_test]
source = \"\"\"
import sys, time
end = time.process_time() + 2.5
while time.process_time() < end:
    pass
sys.stdout.write(sys.stdin.read())
\"\"\"
"""


def test_a_self_test_is_not_held_to_the_default_cpu_limit(settings: Any, host: Any, tmp_path: Path) -> None:
    """A toolchain that works but starts slowly (2.5 s of CPU, over the 2 s default) passes its self-test."""
    (tmp_path / "slowstart.toml").write_text(SLOW_START_TOML)
    registry = Registry.load(tmp_path)
    assert settings.default_run.cpu_time_s < 2.5  # else this test proves nothing
    ok, reason = Engine(settings, registry, host).self_test(registry.get("slowstart"))
    assert ok, reason
