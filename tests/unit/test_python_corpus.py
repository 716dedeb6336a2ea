"""The benchmark corpus (bench/python_corpus): big enough, one task per program, every program passes under plain
``python3``, and every program's asserts really test its function (it fails once that function is a stub).

A corpus whose asserts test nothing would make "all passed" in bench/python_corpus_bench.py meaningless.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# The sandbox runs Debian's python3; fall back to ours where there is none.
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
STDLIB_MIX = ("collections", "itertools", "re", "math", "heapq", "functools", "dataclasses", "typing")


def _load_corpus_module() -> ModuleType:
    # bench/ is not a package: load the corpus loader from its path.
    spec = importlib.util.spec_from_file_location("python_corpus", REPO / "bench" / "python_corpus" / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # @dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus_module()
PROGRAMS = corpus.load()


def stubbed(program: Any) -> str:
    """The program with its entry function's body replaced by ``return None`` (same signature, decorators kept)."""
    tree = ast.parse(program.source)
    matches = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == program.entry]
    assert len(matches) == 1, f"{program.name}: entry must be defined once at top level"
    matches[0].body = [ast.Return(ast.Constant(None))]
    return ast.unparse(tree)


def run_all(sources: list[str], directory: Path) -> list[subprocess.CompletedProcess[bytes]]:
    """Each source as its own file under plain ``python3 file.py``, as a grader runs it; a few at once."""
    paths = []
    for index, source in enumerate(sources):
        path = directory / f"p{index:03d}.py"
        path.write_text(source)
        paths.append(path)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}

    def run(path: Path) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([PYTHON, path.name], cwd=directory, env=env, capture_output=True, timeout=60, check=False)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        return list(pool.map(run, paths))


def test_size_and_one_task_per_program() -> None:
    assert len(PROGRAMS) >= 150
    entries = [p.entry for p in PROGRAMS]
    assert len(set(entries)) == len(entries), "two programs test the same function name"
    normalized = {" ".join(p.source.split()) for p in PROGRAMS}
    assert len(normalized) == len(PROGRAMS), "two programs are the same text"
    for program in PROGRAMS:
        assert program.entry.isidentifier(), program.name
        assert "assert" in program.source, f"{program.name} has no assert"


def test_uses_the_stdlib_mix_graders_see() -> None:
    imported: set[str] = set()
    for program in PROGRAMS:
        for node in ast.walk(ast.parse(program.source)):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert set(STDLIB_MIX) <= imported, f"missing: {set(STDLIB_MIX) - imported}"


def test_every_program_passes(tmp_path: Path) -> None:
    results = run_all([p.source for p in PROGRAMS], tmp_path)
    failed = [(p.name, r.stderr.decode()[-300:]) for p, r in zip(PROGRAMS, results, strict=True) if r.returncode]
    assert not failed


def test_every_program_fails_with_a_stub(tmp_path: Path) -> None:
    results = run_all([stubbed(p) for p in PROGRAMS], tmp_path)
    passed_anyway = [p.name for p, r in zip(PROGRAMS, results, strict=True) if r.returncode == 0]
    assert not passed_anyway, "these pass with their function stubbed out (returning None): their asserts test nothing"
