"""Which runs a pre-warmed interpreter may serve (warm.prewarm_for), and how its slot is started."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cellblock.sandbox.bwrap import BwrapLayout, slot_bwrap_args
from cellblock.sandbox.spec import RunLimits, RunSpec
from cellblock.sandbox.warm import ZYGOTE_SCRIPT, Prewarm, prewarm_for, request_env

LIMITS = RunLimits(cpu_time_s=1, wall_time_s=2, memory_kib=65536, processes=8, output_bytes=1024, file_size_bytes=1024)


def spec(argv: list[str], prewarm: str | None = "python", env: dict[str, str] | None = None) -> RunSpec:
    return RunSpec(argv=argv, limits=LIMITS, prewarm=prewarm, env=env or {})


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["python3", "-B", "main.py"], ("python3", "-B")),
        (["python3", "main.py", "-c", "x"], ("python3",)),  # options after the script are the program's
        (["python3", "-B", "-u", "-OO", "/box/main.py", "a"], ("python3", "-B", "-u", "-OO")),
    ],
)
def test_script_runs_are_prewarmed(argv: list[str], prefix: tuple[str, ...]) -> None:
    got = prewarm_for(spec(argv), request_env(spec(argv)))
    assert got is not None and got.prefix == prefix


@pytest.mark.parametrize(
    "argv",
    [
        ["python3", "-c", "print(1)"],
        ["python3", "-m", "http.server"],
        ["python3", "-I", "main.py"],  # isolated mode: no script directory on sys.path; not reproduced
        ["python3", "-X", "dev", "main.py"],
        ["python3", "-W", "error", "main.py"],
        ["python3", "-"],
        ["python3", "-B"],
        [],
    ],
)
def test_everything_else_is_exec_d(argv: list[str]) -> None:
    assert prewarm_for(spec(argv), {}) is None


def test_only_languages_that_opt_in() -> None:
    assert prewarm_for(spec(["python3", "main.py"], prewarm=None), {}) is None


def test_the_profile_is_the_whole_environment() -> None:
    plain = prewarm_for(spec(["python3", "main.py"]), request_env(spec(["python3", "main.py"])))
    seeded = spec(["python3", "main.py"], env={"PYTHONHASHSEED": "0"})
    other = prewarm_for(seeded, request_env(seeded))
    assert plain is not None and other is not None and plain != other  # a slot serves one profile


def test_the_zygote_starts_with_a_home_no_run_can_write_of_the_runs_home_length() -> None:
    profile = Prewarm(("python3",), (("HOME", "/box"), ("PATH", "/usr/bin")))
    assert profile.start_env() == {"HOME": "/dev", "PATH": "/usr/bin"}
    longer = Prewarm(("python3",), (("HOME", "/box/home"),))
    assert longer.start_env()["HOME"] == "/dev/////" and len(longer.start_env()["HOME"]) == len("/box/home")


def test_the_slot_runs_the_zygote_with_the_interpreter_and_environment(tmp_path: Path) -> None:
    layout = BwrapLayout("bwrap", "launch", tmp_path / "box", tmp_path / "etc", 1 << 20)
    argv = slot_bwrap_args(layout, helper_fd=7, helper_args=["3", "4", "5"], ro_binds=[],
                           interpreter=["python3", "-B"], env={"HOME": "/dev"})  # fmt: skip
    assert argv[argv.index("--") + 1 :] == ["python3", "-B", "/proc/self/fd/7", "3", "4", "5"]
    assert argv[argv.index("--clearenv") + 1 : argv.index("--clearenv") + 4] == ["--setenv", "HOME", "/dev"]


def test_the_zygote_script_imports_nothing_of_ours() -> None:
    """It runs inside the sandbox with the system interpreter: only the standard library."""
    tree = ast.parse(ZYGOTE_SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {"sys", "os", "_socket", "atexit", "contextlib", "ctypes", "gc", "select", "signal"}, imported
