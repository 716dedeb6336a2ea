"""Every registered language, end to end through the real sandbox.

Data-driven over `Registry.load().languages`: the self-test (echo stdin), the toolchain's version, a program
that adds two numbers from stdin (accepted on several tests), a runtime error (its exit code and message), and
for compiled languages a compilation error whose compiler message reaches `result.compile`. A language added
without its programs here fails `test_every_language_has_its_programs`.

Then what each TOML promises beyond that: Java takes any public class name, the JVM and Node get most of the
memory limit as heap and a deep stack, Go refuses a non-main package, tsc type-checks (with Node's types).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
    sum: str  # reads two integers (any whitespace) and prints their sum
    error: str  # fails at run time, printing "boom" to stderr
    error_exit: int  # the exit code that failure gives
    compile_error: str | None = None  # uses UNDEFINED; compiled languages only
    compile_error_file: str | None = None  # where compile_error goes when not the main file (a compile script)
    version: str | None = None  # prints the runtime's own version, to compare with the host's toolchain


BASH_SUM = r"""
n=($(cat))
echo $(( n[0] + n[1] ))
"""
BASH_ERROR = r"""
echo boom >&2
exit 3
"""

PROGRAMS: dict[str, Programs] = {
    # Judge0's multi-file program: the main file is the `run` script; a `compile` script, if any, compiles.
    "multifile": Programs(
        sum=BASH_SUM,
        error=BASH_ERROR,
        error_exit=3,
        compile_error=r"""
echo "make: *** No rule to make target 'undefined_name_xyz'." >&2
exit 2
""",
        compile_error_file="compile",
    ),
    "bash": Programs(
        sum=BASH_SUM,
        error=BASH_ERROR,
        error_exit=3,
        version=r"""
echo "$BASH_VERSION"
""",
    ),
    "c": Programs(
        sum=r"""
#include <stdio.h>
int main(void) {
    long long a, b;
    if (scanf("%lld %lld", &a, &b) != 2) return 1;
    printf("%lld\n", a + b);
    return 0;
}
""",
        error=r"""
#include <stdio.h>
int main(void) {
    fprintf(stderr, "boom\n");
    return 3;
}
""",
        error_exit=3,
        compile_error=r"""
int main(void) { return undefined_name_xyz; }
""",
        version=r"""
#include <stdio.h>
int main(void) { puts(__VERSION__); return 0; }
""",
    ),
    "cpp": Programs(
        sum=r"""
#include <iostream>
int main() {
    long long a, b;
    std::cin >> a >> b;
    std::cout << a + b << '\n';
}
""",
        error=r"""
#include <iostream>
int main() {
    std::cerr << "boom" << std::endl;
    return 3;
}
""",
        error_exit=3,
        compile_error=r"""
#include <vector>
int main() { std::vector<int> v{undefined_name_xyz}; return v[0]; }
""",
        version=r"""
#include <iostream>
int main() { std::cout << __VERSION__ << '\n'; }
""",
    ),
    "go": Programs(
        sum=r"""
package main

import "fmt"

func main() {
	var a, b int64
	fmt.Scan(&a, &b)
	fmt.Println(a + b)
}
""",
        error=r"""
package main

func main() {
	panic("boom")
}
""",
        error_exit=2,
        compile_error=r"""
package main

import "fmt"

func main() {
	fmt.Println(undefined_name_xyz)
}
""",
        version=r"""
package main

import (
	"fmt"
	"runtime"
)

func main() {
	fmt.Println(runtime.Version())
}
""",
    ),
    "java": Programs(
        sum=r"""
import java.util.Scanner;

public class Main {
    public static void main(String[] args) {
        Scanner in = new Scanner(System.in);
        System.out.println(in.nextLong() + in.nextLong());
    }
}
""",
        error=r"""
public class Main {
    public static void main(String[] args) {
        throw new IllegalStateException("boom");
    }
}
""",
        error_exit=1,
        compile_error=r"""
public class Main {
    public static void main(String[] args) {
        System.out.println(undefined_name_xyz);
    }
}
""",
        version=r"""
public class Main {
    public static void main(String[] args) {
        System.out.println(System.getProperty("java.version"));
    }
}
""",
    ),
    "javascript": Programs(
        sum=r"""
const [a, b] = require("fs").readFileSync(0, "utf8").trim().split(/\s+/).map(Number);
console.log(a + b);
""",
        error=r"""
throw new Error("boom");
""",
        error_exit=1,
        version=r"""
console.log(process.version);
""",
    ),
    "perl": Programs(
        sum=r"""
my ($x, $y) = split ' ', do { local $/; <STDIN> };
print $x + $y, "\n";
""",
        error=r"""
die "boom\n";
""",
        error_exit=255,
        version=r"""
print $^V, "\n";
""",
    ),
    "php": Programs(
        sum=r"""<?php
[$a, $b] = array_map("intval", preg_split("/\s+/", trim(stream_get_contents(STDIN))));
echo $a + $b, "\n";
""",
        error=r"""<?php
throw new Exception("boom");
""",
        error_exit=255,
        version=r"""<?php
echo PHP_VERSION, "\n";
""",
    ),
    "python3": Programs(
        sum=r"""
import sys

a, b = map(int, sys.stdin.read().split())
print(a + b)
""",
        error=r"""
raise ValueError("boom")
""",
        error_exit=1,
        version=r"""
import platform

print(platform.python_version())
""",
    ),
    "ruby": Programs(
        sum=r"""
a, b = STDIN.read.split.map(&:to_i)
puts a + b
""",
        error=r"""
raise "boom"
""",
        error_exit=1,
        version=r"""
puts RUBY_VERSION
""",
    ),
    "rust": Programs(
        sum=r"""
use std::io::Read;

fn main() {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).unwrap();
    let v: Vec<i64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    println!("{}", v[0] + v[1]);
}
""",
        error=r"""
fn main() {
    panic!("boom");
}
""",
        error_exit=101,
        compile_error=r"""
fn main() {
    println!("{}", undefined_name_xyz);
}
""",
        # No version: a Rust binary carries no rustc version that it could print.
    ),
    "typescript": Programs(
        sum=r"""
import { readFileSync } from "fs";

const [a, b]: number[] = readFileSync(0, "utf8").trim().split(/\s+/).map(Number);
console.log(a + b);
""",
        error=r"""
const fail = (): never => {
    throw new Error("boom");
};
fail();
""",
        error_exit=1,
        compile_error=r"""
console.log(undefined_name_xyz);
""",
        # No version: the version is tsc's, and the compiled program runs on Node, which cannot see tsc.
    ),
}
WITH_VERSION = [name for name in NAMES if name in PROGRAMS and PROGRAMS[name].version is not None]


def test_every_language_has_its_programs() -> None:
    assert sorted(PROGRAMS) == sorted(NAMES)
    for lang in LANGUAGES:
        programs = PROGRAMS[lang.name]
        assert (programs.compile_error is not None) == lang.compiled, lang.name
        assert programs.compile_error is None or UNDEFINED in programs.compile_error


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


@pytest.mark.parametrize("name", NAMES)
def test_sum_of_two_numbers_is_accepted(run_job: Any, registry: Registry, name: str) -> None:
    result = run_job(name, PROGRAMS[name].sum, tests=SUM_TESTS)
    assert [(t.id, t.verdict) for t in result.tests] == [(t["id"], "accepted") for t in SUM_TESTS], result
    assert result.verdict == "accepted"
    assert [t.run.stdout for t in result.tests] == [t["expected_output"] for t in SUM_TESTS]
    if registry.get(name).compiled:
        assert result.compile is not None and result.compile.outcome == "ok"
    else:
        assert result.compile is None


@pytest.mark.parametrize("name", NAMES)
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
