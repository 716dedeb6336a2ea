"""`cellblock exec | languages | doctor` as a user runs them: a real process, the real sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cellblock.models import JobResult

pytestmark = pytest.mark.sandbox

CELLBLOCK = str(Path(sys.executable).parent / "cellblock")


def cellblock(data_dir: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CELLBLOCK, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "CELLBLOCK_DATA_DIR": str(data_dir), **env})  # fmt: skip


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "double.py"
    path.write_text("print(int(input()) * 2)\n")
    return path


def test_exec_prints_a_summary_and_exits_0_when_accepted(data_dir: Path, program: Path, tmp_path: Path) -> None:
    stdin = tmp_path / "in.txt"
    stdin.write_text("21\n")
    done = cellblock(data_dir, "exec", str(program), "--stdin", str(stdin))
    assert done.returncode == 0, done.stderr
    assert "verdict: accepted" in done.stdout and "\n42" in done.stdout


def test_exec_json_is_exactly_the_job_result(data_dir: Path, program: Path, tmp_path: Path) -> None:
    tests = tmp_path / "tests.json"
    tests.write_text(json.dumps([{"stdin": "1", "expected_output": "2"}, {"stdin": "2", "expected_output": "5"}]))
    done = cellblock(data_dir, "exec", str(program), "--tests", str(tests), "--json", "--cpu-time", "1")
    assert done.returncode == 1
    result = JobResult.model_validate_json(done.stdout)
    assert [t.verdict for t in result.tests] == ["accepted", "wrong_answer"]
    assert result.verdict == "wrong_answer" and result.language == "python3"


def test_exec_compile_error_shows_the_compiler(data_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int main( { }\n")
    done = cellblock(data_dir, "exec", str(source))
    assert done.returncode == 1
    assert "compilation_error" in done.stdout and "error" in done.stdout


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--lang", "pyhton"], "language"),
        (["--cpu-time", "100000"], "limits.cpu_time_s"),
        (["--memory", "0"], "limits.memory_mib"),
    ],
)
def test_exec_bad_options_exit_2_naming_the_field(data_dir: Path, program: Path, args: list[str], field: str) -> None:
    done = cellblock(data_dir, "exec", str(program), *args)
    assert done.returncode == 2, done.stdout
    assert f"[{field}]" in done.stderr
    assert "Traceback" not in done.stderr


def test_exec_rejects_non_utf8_source_and_unknown_extension(data_dir: Path, tmp_path: Path) -> None:
    latin1 = tmp_path / "x.py"
    latin1.write_bytes(b"print('\xe9')\n")
    done = cellblock(data_dir, "exec", str(latin1))
    assert done.returncode == 2 and "[files[0].content]" in done.stderr and "UTF-8" in done.stderr
    odd = tmp_path / "x.unknownext"
    odd.write_text("hello")
    done = cellblock(data_dir, "exec", str(odd))
    assert done.returncode == 2 and "--lang" in done.stderr


def test_exec_refuses_to_run_without_a_sandbox(data_dir: Path, program: Path) -> None:
    done = cellblock(data_dir, "exec", str(program), CELLBLOCK_BWRAP_PATH="/nonexistent/bwrap")
    assert done.returncode == 3
    assert "refusing to run code" in done.stderr and "bubblewrap not found" in done.stderr


def test_languages_lists_versions_and_self_tests(data_dir: Path) -> None:
    done = cellblock(data_dir, "languages", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["python3"]["version"].startswith("3.")
    assert rows["python3"]["state"] == "ok" and rows["python3"]["reason"] is None
    assert 71 in rows["python3"]["judge0_ids"]


# Site languages (CELLBLOCK_LANGUAGES_DIR) in the three states a listing must tell apart.
ABSENT_TOML = """
name = "absent"
display_name = "Absent"
debian_packages = ["cellblock-test-no-such-package"]
version_command = ["cellblock-test-no-such-binary", "--version"]
source_file = "main.absent"
run = ["cellblock-test-no-such-binary", "{source}"]
[self_test]
source = "x"
"""
BROKEN_TOML = """
name = "broken"
display_name = "Broken (its self-test fails)"
debian_packages = ["python3"]
version_command = ["python3", "--version"]
source_file = "main.py"
run = ["python3", "{source}"]
[self_test]
source = "import sys; sys.stderr.write('this toolchain is broken'); sys.exit(4)"
"""


@pytest.fixture
def site_languages(tmp_path: Path) -> Path:
    directory = tmp_path / "languages"
    directory.mkdir()
    (directory / "absent.toml").write_text(ABSENT_TOML)
    (directory / "broken.toml").write_text(BROKEN_TOML)
    return directory


def test_languages_tells_ok_failing_and_not_installed_apart(data_dir: Path, site_languages: Path) -> None:
    done = cellblock(data_dir, "languages", "--json", CELLBLOCK_LANGUAGES_DIR=str(site_languages))
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["absent"]["state"] == "not-installed" and rows["absent"]["version"] is None
    assert rows["absent"]["reason"] == "not installed: cellblock languages install absent"
    assert rows["broken"]["state"] == "failing" and rows["broken"]["version"].startswith("3.")
    assert "self-test failed" in rows["broken"]["reason"] and "this toolchain is broken" in rows["broken"]["reason"]
    assert rows["python3"]["state"] == "ok"
    text = cellblock(data_dir, "languages", CELLBLOCK_LANGUAGES_DIR=str(site_languages))
    summary = text.stdout.strip().splitlines()[-1]
    assert "1 failing" in summary and "1 not installed" in summary and "cellblock languages install" in summary


def test_languages_install_refuses_unknown_names_and_says_the_closest(data_dir: Path) -> None:
    done = cellblock(data_dir, "languages", "install", "pyhton3")
    assert done.returncode == 2 and "unknown language 'pyhton3'" in done.stderr and "'python3'" in done.stderr
    neither = cellblock(data_dir, "languages", "install")
    assert neither.returncode == 2 and "--all or --core" in neither.stderr


def test_languages_install_of_an_installed_language_only_self_tests_it(data_dir: Path, site_languages: Path) -> None:
    done = cellblock(data_dir, "languages", "install", "py", "ruby")  # an alias is fine
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all present" in done.stdout and "2 languages: 2 ok" in done.stdout
    failing = cellblock(data_dir, "languages", "install", "broken", CELLBLOCK_LANGUAGES_DIR=str(site_languages))
    assert failing.returncode == 1 and "failing" in failing.stdout and "this toolchain is broken" in failing.stdout


def test_doctor_checks_everything(data_dir: Path) -> None:
    done = cellblock(data_dir, "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cgroup v" in done.stdout and "python3" in done.stdout
    broken = cellblock(data_dir, "doctor", CELLBLOCK_CGROUP_ROOT="/nonexistent")
    assert broken.returncode == 1 and "cgroup" in broken.stdout
