"""A corpus of small Python programs graded the way code-generation benchmarks grade: a function plus asserts
that test it, and the program passes when it exits 0 (issue 8, the benchmark corpus).

Every program was written for Cellblock. They live as plain text in ``*.txt`` next to this file, one program
after a header line ``#### <entry>``, where ``<entry>`` is the top-level function the asserts test (unique across
the corpus: one task per program). Text rather than ``.py`` modules so that linters and pytest leave them alone
and each program is byte-for-byte what a grader would submit.

The styles vary on purpose, as graders' do: plain module-level asserts, HumanEval's ``check(candidate)``, asserts
under ``if __name__ == "__main__":``, and a few ``unittest`` cases. tests/unit/test_python_corpus.py checks that
all pass under plain ``python3`` and that each fails once its entry function is replaced by a stub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = "#### "


@dataclass(frozen=True)
class Program:
    group: str  # the file it comes from (strings, numbers, ...)
    entry: str  # the top-level function the asserts test
    source: str

    @property
    def name(self) -> str:
        return f"{self.group}/{self.entry}"


def load(directory: Path = HERE) -> list[Program]:
    """Every program, in a stable order (files by name, programs as written)."""
    programs: list[Program] = []
    for path in sorted(directory.glob("*.txt")):
        entry: str | None = None
        lines: list[str] = []
        for line in [*path.read_text().splitlines(), HEADER + "<end>"]:
            if not line.startswith(HEADER):
                lines.append(line)
                continue
            if entry is not None:
                programs.append(Program(path.stem, entry, "\n".join(lines).strip("\n") + "\n"))
            elif any(text.strip() for text in lines):
                raise ValueError(f"{path.name}: text before the first {HEADER!r} header")
            entry, lines = line[len(HEADER) :].strip(), []
    return programs
