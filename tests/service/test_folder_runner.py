"""`cellblock run PATH...` (the folder runner) and `cellblock exec --server`, as a user runs them: real processes,
against the real service (`--server`) or the embedded one it starts itself."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from cellblock.folder import discover, suffix_table
from tests.service.conftest import Service

pytestmark = pytest.mark.sandbox

CELLBLOCK = [sys.executable, "-m", "cellblock"]
ADD_C = '#include <stdio.h>\nint main(void){int a,b;scanf("%d %d",&a,&b);printf("%d\\n",a+b);return 0;}\n'

# name → content; `.in` is stdin and `.out` the expected output of the program with the same stem.
TASKS = {
    "double.py": "print(int(input()) * 2)\n",
    "double.in": "21\n",
    "double.out": "42\n",
    "sub/add.c": ADD_C,
    "sub/add.in": "1 2\n",
    "sub/add.out": "3\n",
    "greet.sh": 'read name; echo "hello $name"; echo to-stderr >&2\n',
    "greet.in": "ann\n",
    "wrong.py": "print(5)\n",
    "wrong.out": "6\n",
    "broken.c": "int main( {\n",
    "empty.py": "",
    "README.md": "not a program\n",
    "data/numbers.txt": "1 2 3\n",
    ".hidden/secret.py": "print('never run')\n",
}
VERDICTS = {
    "double.py": "accepted",
    "sub/add.c": "accepted",
    "greet.sh": "accepted",
    "wrong.py": "wrong_answer",
    "broken.c": "compilation_error",
    "empty.py": None,  # refused by the server (no program to run): a row with its message, the rest still run
}


def make_tasks(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def cellblock(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CELLBLOCK, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def check_results(out: Path) -> pd.DataFrame:
    """The table, the Parquet copy and received_output/ of a run over TASKS."""
    frame = pd.read_csv(out / "results.csv")
    assert list(frame.columns[:9]) == ["file", "language", "verdict", "state", "exit_code", "signal", "cpu_time_s",
                                       "wall_time_s", "memory_kib"]  # fmt: skip
    assert {"worker_host", "message", "job_id"} <= set(frame.columns)
    parquet = pd.read_parquet(out / "results.parquet")
    assert parquet["file"].tolist() == frame["file"].tolist()
    assert parquet["verdict"].fillna("-").tolist() == frame["verdict"].fillna("-").tolist()
    assert str(parquet["exit_code"].dtype) == "Int64" and str(parquet["memory_kib"].dtype) == "Int64"
    rows = frame.set_index("file")
    assert sorted(rows.index) == sorted(VERDICTS)
    for name, verdict in VERDICTS.items():
        assert (rows.loc[name, "verdict"] if pd.notna(rows.loc[name, "verdict"]) else None) == verdict, name
    assert rows.loc[["double.py", "sub/add.c", "greet.sh"], "language"].tolist() == ["python3", "c", "bash"]
    accepted = rows[rows["verdict"] == "accepted"]
    assert (accepted["exit_code"] == 0).all() and (accepted["memory_kib"] > 0).all()
    assert ((accepted["cpu_time_s"] > 0) & (accepted["cpu_time_s"] < 1)).all()
    assert (rows.dropna(subset=["verdict"])["worker_host"] == socket.gethostname()).all()
    assert rows.loc["wrong.py", "exit_code"] == 0
    assert pd.isna(rows.loc["broken.c", "exit_code"]) and pd.isna(rows.loc["broken.c", "cpu_time_s"])
    assert "empty" in rows.loc["empty.py", "message"] and pd.isna(rows.loc["empty.py", "job_id"])
    received = out / "received_output"
    assert (received / "double.stdout").read_text() == "42\n"
    assert (received / "sub" / "add.stdout").read_text() == "3\n"
    assert (received / "greet.stdout").read_text() == "hello ann\n"
    assert (received / "greet.stderr").read_text() == "to-stderr\n"
    assert (received / "wrong.stdout").read_text() == "5\n"
    assert (received / "broken.stdout").exists() and "error" in (received / "broken.stderr").read_text()
    written = sorted(str(p.relative_to(received)) for p in received.rglob("*") if p.is_file())
    assert written == sorted(f"{stem}.{s}" for stem in ("double", "sub/add", "greet", "wrong", "broken")
                             for s in ("stdout", "stderr"))  # fmt: skip
    return frame


def test_discover_finds_programs_and_their_in_and_out_files(tmp_path: Path) -> None:
    root = make_tasks(tmp_path / "tasks", {**TASKS, "double.js": "x", "received_output/old.py": "x"})
    suffixes = suffix_table([("python3", "main.py"), ("c", "main.c"), ("bash", "script.sh"), ("js", "main.js")])
    programs = {p.name: p for p in discover([root], suffixes, skip=[root / "received_output"])}
    assert sorted(programs) == sorted([*VERDICTS, "double.js"])
    assert programs["double.py"].stdin == root / "double.in" and programs["double.py"].expected == root / "double.out"
    assert programs["sub/add.c"].expected == root / "sub/add.out" and programs["wrong.py"].stdin is None
    assert programs["greet.sh"].language == "bash" and programs["greet.sh"].expected is None
    # two programs share the stem "double": their outputs keep the extension apart; the others drop it
    assert (programs["double.py"].output_stem, programs["double.js"].output_stem) == ("double.py", "double.js")
    assert programs["sub/add.c"].output_stem == "sub/add"
    two = {p.name for p in discover([root / "double.py", root / "sub"], suffixes)}
    assert two == {"double.py", "sub/add.c"}


def test_run_against_a_server(service: Service, tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "tasks", TASKS)
    out = tmp_path / "out"
    done = cellblock("run", str(tasks), "--server", service.base_url, "--output", str(out))
    assert done.returncode == 1, done.stderr  # not everything was accepted
    check_results(out)
    assert "6 programs: 3 accepted" in done.stdout
    assert "[6/6]" in done.stderr  # progress, one line per program off a terminal


def test_all_accepted_exits_zero_and_json_lists_every_result(service: Service, tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "tasks", {k: v for k, v in TASKS.items() if k.startswith(("double", "sub/"))})
    out = tmp_path / "out"
    done = cellblock("run", str(tasks), "--server", service.base_url, "--output", str(out), "--json")
    assert done.returncode == 0, done.stderr
    docs = {d["file"]: d for d in json.loads(done.stdout)}
    assert sorted(docs) == ["double.py", "sub/add.c"]
    assert docs["double.py"]["result"]["tests"][0]["run"]["stdout"] == "42\n"
    assert docs["sub/add.c"]["result"]["compile"]["exit_code"] == 0 and docs["sub/add.c"]["verdict"] == "accepted"


def test_limits_reach_every_program(service: Service, tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "tasks", {"spin.py": "while True:\n    pass\n", "ok.py": "print(1)\n"})
    out = tmp_path / "out"
    started = time.monotonic()
    done = cellblock("run", str(tasks), "--server", service.base_url, "--output", str(out), "--cpu-time", "0.3",
                     "--wall-time", "3")  # fmt: skip
    assert done.returncode == 1
    rows = pd.read_csv(out / "results.csv").set_index("file")
    assert rows.loc["spin.py", "verdict"] == "time_limit_exceeded" and rows.loc["ok.py", "verdict"] == "accepted"
    assert 0.3 <= rows.loc["spin.py", "cpu_time_s"] < 1.0
    assert time.monotonic() - started < 30


def test_nothing_to_run_is_a_user_error(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "tasks", {"notes.txt": "x", "a.in": "1"})
    done = cellblock("run", str(tasks), "--server", "http://127.0.0.1:1", "--output", str(tmp_path / "out"))
    assert done.returncode == 2 and "no programs found" in done.stderr
    missing = cellblock("run", str(tmp_path / "nope"), "--server", "http://127.0.0.1:1")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_an_unreachable_server_is_exit_3(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "tasks", {"a.py": "print(1)\n"})
    done = cellblock("run", str(tasks), "--server", "http://127.0.0.1:1", "--output", str(tmp_path / "out"))
    assert done.returncode == 3 and "does not answer" in done.stderr
    assert not (tmp_path / "out" / "results.csv").exists()


def _processes_mentioning(marker: str) -> dict[int, str]:
    """Processes whose command line or environment mention `marker` (our private data dir)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker in cmdline or marker.encode() in environ:
            found[int(proc.name)] = cmdline
    return found


def test_embedded_server_runs_the_folder_and_leaves_no_process(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path / "tasks", TASKS)
    out = tmp_path / "out"
    data = Path(tempfile.mkdtemp(prefix="cb-run-test-", dir="/var/tmp"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(tmp_path),
           "CELLBLOCK_DATA_DIR": str(data), "CELLBLOCK_WORKER_SLOTS": "2"}  # fmt: skip
    log = tmp_path / "runner.log"
    try:
        with open(log, "w") as sink:
            runner = subprocess.Popen([*CELLBLOCK, "run", str(tasks), "--output", str(out)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=sink)  # fmt: skip
        seen: dict[int, str] = {}
        while runner.poll() is None:
            seen |= {pid: cmd for pid, cmd in _processes_mentioning(str(data)).items() if pid != runner.pid}
            time.sleep(0.1)
        left = _processes_mentioning(str(data))
        leftover_dirs = [p.name for p in data.iterdir() if p.name.startswith("run-")]
    finally:
        for pid in _processes_mentioning(str(data)):  # only if the runner failed to: they are this test's
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(data, ignore_errors=True)
    stderr = log.read_text()
    assert runner.returncode == 1, stderr
    assert any("redis-server" in cmd for cmd in seen.values()), seen
    assert any(" worker " in cmd for cmd in seen.values()) and any(" serve " in cmd for cmd in seen.values()), seen
    assert "embedded server" in stderr
    check_results(out)
    assert left == {} and leftover_dirs == []  # no process survives; its private Redis dir is gone


def test_exec_through_a_server_prints_what_local_exec_prints(service: Service, tmp_path: Path) -> None:
    program = tmp_path / "double.py"
    program.write_text(TASKS["double.py"])
    stdin = tmp_path / "double.in"
    stdin.write_text("21\n")
    local = cellblock("exec", str(program), "--stdin", str(stdin))
    remote = cellblock("exec", str(program), "--stdin", str(stdin), "--server", service.base_url)
    assert local.returncode == remote.returncode == 0, remote.stderr

    def masked(text: str) -> str:
        return re.sub(r"\d+(\.\d+)?(s| KiB)", "N", text)

    assert masked(remote.stdout) == masked(local.stdout) and remote.stdout.splitlines()[-1] == "42"
    as_json = json.loads(cellblock("exec", str(program), "--stdin", str(stdin), "--server", service.base_url,
                                   "--json").stdout)  # fmt: skip
    assert as_json["verdict"] == "accepted" and as_json["worker"] and as_json["tests"][0]["run"]["stdout"] == "42\n"
    bad = cellblock("exec", str(program), "--server", service.base_url, "--cpu-time", "1000")
    assert bad.returncode == 2 and "limits.cpu_time_s" in bad.stderr
    wrong = cellblock("exec", str(program), "--stdin", str(stdin), "--server", service.base_url, "--lang", "c")
    assert wrong.returncode == 1 and "compilation_error" in wrong.stdout
