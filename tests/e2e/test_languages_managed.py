"""The managed-runtime languages beyond tests/e2e/test_languages.py: what their TOMLs promise.

JVM languages (Kotlin, Scala, Groovy, Clojure) get java.toml's treatment: the heap follows the memory limit
(the box has no /sys, so the JVM would size itself for the host), running out of it is the runtime's own
OutOfMemoryError, and the 64 MiB thread stack takes deep recursion. Kotlin and Scala run the class that their
jar's manifest names; Haxe's main class may have any name; an Erlang script runs whatever its first line is.
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.sandbox

# 200 MiB of live int arrays, then 200 000 nested calls.
HEAP = {
    "clojure": """(defn depth [n] (if (zero? n) 0 (inc (depth (dec n)))))

(def blocks (vec (for [i (range 200)] (int-array (* 256 1024) i))))
(println (count blocks))
(println (depth 200000))
""",
    "groovy": """int depth(int n) { n == 0 ? 0 : 1 + depth(n - 1) }

def keep = []
200.times { int i -> int[] block = new int[256 * 1024]; Arrays.fill(block, i); keep << block }
println keep.size()
println depth(200000)
""",
    "kotlin": """fun depth(n: Int): Int = if (n == 0) 0 else 1 + depth(n - 1)

fun main() {
    val keep = ArrayList<IntArray>()
    for (i in 0 until 200) keep.add(IntArray(256 * 1024) { i })
    println(keep.size)
    println(depth(200000))
}
""",
    "scala": """object Main {
  def depth(n: Int): Int = if (n == 0) 0 else 1 + depth(n - 1)

  def main(args: Array[String]): Unit = {
    val keep = scala.collection.mutable.ArrayBuffer[Array[Int]]()
    for (i <- 0 until 200) keep += Array.fill(256 * 1024)(i)
    println(keep.size)
    println(depth(200000))
  }
}
""",
}


@pytest.mark.parametrize("name", sorted(HEAP))
def test_jvm_heap_can_use_most_of_the_memory_limit_and_recursion_is_deep(run_job: Any, name: str) -> None:
    result = run_job(name, HEAP[name], limits={"memory_mib": 256})
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "200\n200000\n"


@pytest.mark.parametrize("name", sorted(HEAP))
def test_jvm_out_of_heap_is_its_own_error(run_job: Any, name: str) -> None:
    result = run_job(name, HEAP[name], limits={"memory_mib": 128})
    assert result.verdict == "runtime_error", result
    assert "java.lang.OutOfMemoryError" in result.tests[0].run.stderr


def test_kotlin_main_in_a_package_runs(run_job: Any) -> None:
    # The jar's manifest names the main class, so a `package` line does not break the run.
    source = "package contest.solution\n\nfun main() {\n    println(readLine()!!.length)\n}\n"
    result = run_job("kotlin", source, stdin="hello\n")
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "5\n"


def test_kotlin_targets_java_8_with_the_jdk8_stdlib(run_job: Any) -> None:
    # A static method of a Java interface (not callable with the default 1.6 target) and kotlin.streams.
    source = (
        "import java.util.stream.IntStream\nimport kotlin.streams.toList\n\n"
        "fun main() {\n    println(IntStream.range(0, 3).toList())\n}\n"
    )
    result = run_job("kotlin", source)
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "[0, 1, 2]\n"
    assert result.compile.stderr == ""


def test_scala_object_with_any_name_runs(run_job: Any) -> None:
    # scalac writes the main object's name into the jar's manifest, like `scala Main` in Judge0 but any name.
    source = 'object Solution extends App {\n  println("hello, " + scala.io.StdIn.readLine())\n}\n'
    result = run_job("scala", source, stdin="world\n")
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "hello, world\n"


# --- Haxe: any class name --------------------------------------------------------------------------------------

HAXE_HELPER_FIRST = """class Helper {
    public static function twice(x:Int):Int return 2 * x;
}

@:keep
final class Solution {
    static public function main() {
        Sys.println(Helper.twice(Std.parseInt(Sys.stdin().readLine())) + " " + Sys.args().join(","));
    }
}
"""


def test_haxe_main_class_may_have_any_name_and_follow_helpers(run_job: Any) -> None:
    # The file is named after the first class that declares `function main(`: Haxe wants the module named so.
    result = run_job("haxe", HAXE_HELPER_FIRST, stdin="21\n", args=["a", "b"])
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == "42 a,b\n"


# --- Erlang: escript's first line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    ["", "#!/usr/bin/env escript\n", "%% a comment escript skips\n", "\n", "#!/usr/bin/env escript\n%%! +A 1\n"],
)
def test_erlang_script_runs_whatever_its_first_line(run_job: Any, header: str) -> None:
    # escript skips line 1; code there (Judge0's samples) still runs, and a #! or comment line stays a header.
    source = header + 'main(Args) ->\n    io:format("~p~n", [Args]).\n'
    result = run_job("erlang", source, args=["a", "b"])
    assert result.verdict == "accepted", result
    assert result.tests[0].run.stdout == '["a","b"]\n'


def test_erlang_compile_error_gives_the_line(run_job: Any) -> None:
    result = run_job("erlang", 'main(_) ->\n    X = 1,\n    io:format("~p~n", [Y]).\n')
    assert result.verdict == "compilation_error"
    assert "main.escript:3:" in result.compile.stdout and "variable 'Y' is unbound" in result.compile.stdout
