"""The external conformance corpus: load each file, map its cases to our languages, and judge results its way.

The corpus (``conformance_dir()``, never copied into this repo) holds programs from other code-execution
projects — Piston, DMOJ, Judge0's IDE and glot — with their inputs and expected results. Each case is planned
into one of two kinds:

* **applicable**: it maps to a registered language; `Case.spec` is the JobSpec to run through the real sandbox
  and `Case.judge` says, the corpus file's own way, what is wrong with a result (None = passed);
* **not applicable**: `Case.reason` says why. Reasons come from ``not_applicable.toml`` (the one explicit list,
  reviewed by hand) or are derived here for two mechanical causes only: the case's language is not registered,
  and an older Piston version's test that is the very same program as one already run (we have one toolchain
  version per language, so running it again proves nothing).

How a corpus language maps to ours:

* Piston: the case's language name (or its aliases) against `Language.piston_name` / `piston_aliases`.
* DMOJ: the executor's language (from ``dmoj_selftests.json``) by registry name or alias, through `FLAVOURS`
  (its python3-pypy is our pypy3, its prolog our swi-prolog); the executor's ``std`` becomes ``-std=<std>``
  (DMOJ's C is c99, CPP17 is c++17…).
* Judge0: `Language.judge0_ids`, then other flavours of the same language from Judge0's own table: a program
  for "C (GCC 7.4.0)" or "C (Clang 7.0.1)" runs on our ``c`` (`judge0_family`).
* glot: its language name by registry name or alias (glot's ``python`` is Python 3).
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cellblock.engine import Engine
from cellblock.errors import UnknownLanguage
from cellblock.languages.registry import Language, Registry
from cellblock.models import JobResult, JobSpec, StepResult, Verdict
from tests.conftest import conformance_dir

NOT_APPLICABLE_TOML = Path(__file__).with_name("not_applicable.toml")
CORPORA = ("piston_tests", "dmoj_selftests", "dmoj_testsuite", "judge0_ide_samples", "glot_examples")

# Corpus language names that are flavours of one of ours (same language, another implementation). DMOJ's
# "prolog" (PRO) runs swipl; our "prolog" is GNU Prolog (Judge0's).
FLAVOURS = {"python3-pypy": "pypy3", "prolog": "swi-prolog"}

# Short but not stingy: a slow JVM start on a busy 2-core machine must not turn into a false failure.
RUN_LIMITS = {"cpu_time_s": 5.0, "wall_time_s": 10.0}
COMPILE_LIMITS = {"cpu_time_s": 20.0, "wall_time_s": 40.0}
DMOJ_COMPILE_LIMITS = {"cpu_time_s": 10.0, "wall_time_s": 20.0}  # DMOJ's compiler time limit is 10 s
DMOJ_OUTPUT_KIB = 1024  # aplusb's largest expected output is 454 KiB; cpp_ole must hit the cap quickly
DMOJ_PLATFORMS = {"any", "posix", "linux"}  # this machine; the others (freebsd) are listed as not applicable
DMOJ_VERDICTS = {
    "AC": Verdict.ACCEPTED,
    "WA": Verdict.WRONG_ANSWER,
    "CE": Verdict.COMPILATION_ERROR,
    "RTE": Verdict.RUNTIME_ERROR,  # killed by a signal or an exception
    "IR": Verdict.RUNTIME_ERROR,  # invalid return: non-zero exit
    "TLE": Verdict.TIME_LIMIT_EXCEEDED,
    "MLE": Verdict.MEMORY_LIMIT_EXCEEDED,
    "OLE": Verdict.OUTPUT_LIMIT_EXCEEDED,
}
# The corpus note on dmoj/RUST: DMOJ builds Rust with cargo and these crates; with plain rustc, drop the lines.
DMOJ_RUST_CRATE_USES = re.compile(r"^use (dmoj|libc|rand|rand_xoshiro) as _;\n", re.MULTILINE)

Judge = Callable[[JobResult], str | None]


@dataclass(frozen=True)
class Case:
    corpus: str
    id: str
    language: str | None = None  # ours; None when not applicable
    spec: JobSpec | None = None
    judge: Judge | None = None
    reason: str | None = None  # why it is not applicable
    adapted: str | None = None  # how the program was adapted, when the corpus itself says how
    unregistered: str | None = None  # the corpus's language name, when none of ours maps to it

    @property
    def applicable(self) -> bool:
        return self.reason is None


@dataclass
class Plan:
    """Every case of one corpus file, in file order."""

    corpus: str
    cases: list[Case] = field(default_factory=list)

    def applicable(self) -> list[Case]:
        return [c for c in self.cases if c.applicable]

    def not_applicable(self) -> list[Case]:
        return [c for c in self.cases if not c.applicable]


# ---------------------------------------------------------------------------------------------------- loading


def load(corpus_dir: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((corpus_dir / f"{name}.json").read_text())
    return data


def load_not_applicable() -> dict[str, dict[str, str]]:
    """{corpus file: {case id: reason}} from not_applicable.toml."""
    data = tomllib.loads(NOT_APPLICABLE_TOML.read_text())
    return {name: dict(table) for name, table in data.items()}


def corpus_case_ids(corpus_dir: Path, name: str) -> list[str]:
    data = load(corpus_dir, name)
    if name == "dmoj_testsuite":
        return [s["id"] for p in data["problems"] for s in p["submissions"]]
    return [c["id"] for c in data["cases"]]


# ---------------------------------------------------------------------------------------------------- results


def text(step: StepResult | None, stream: str = "stdout") -> str:
    if step is None:
        return ""
    value: str = getattr(step, stream)
    if getattr(step, f"{stream}_encoding") == "base64":
        return base64.b64decode(value).decode("utf-8", "replace")
    return value


def run_step(result: JobResult) -> StepResult | None:
    return result.tests[0].run if result.tests else None


def describe(result: JobResult) -> str:
    """Enough of a result to see why a case failed, without the whole stdout."""
    parts = [f"verdict={result.verdict} state={result.state}"]
    if result.message:
        parts.append(f"message={result.message!r}")
    if result.compile is not None and result.compile.outcome != "ok":
        parts.append(f"compile: {result.compile.outcome} {result.compile.message!r} "
                      f"stderr={text(result.compile, 'stderr')[-800:]!r}")  # fmt: skip
    for test in result.tests:
        run = test.run
        if run is None:
            continue
        parts.append(f"test {test.id}: {test.verdict} outcome={run.outcome} exit={run.exit_code} signal={run.signal} "
                     f"cpu={run.cpu_time_s:.3f}s wall={run.wall_time_s:.3f}s mem={run.memory_kib}KiB "
                     f"checker={test.checker_message!r} stdout={text(run)[:300]!r} "
                     f"stderr={text(run, 'stderr')[-800:]!r}")  # fmt: skip
    return "\n  ".join(parts)


def _compiled(result: JobResult) -> str | None:
    if result.verdict == Verdict.COMPILATION_ERROR or (result.compile and result.compile.outcome != "ok"):
        return "the program did not compile"
    if not result.tests or result.tests[0].run is None:
        return "the program did not run"
    return None


def judge_piston(result: JobResult) -> str | None:
    """Piston CI: the output contains OK."""
    problem = _compiled(result)
    if problem is None and "OK" not in text(run_step(result)):
        problem = "stdout does not contain 'OK'"
    return problem


def judge_dmoj_selftest(expected: str) -> Judge:
    """DMOJ's run_self_test: stdout.strip() equals the expected text and stderr is empty."""

    def judge(result: JobResult) -> str | None:
        problem = _compiled(result)
        step = run_step(result)
        if problem is None and text(step).strip() != expected.strip():
            problem = f"stdout.strip() is not {expected.strip()!r}"
        elif problem is None and text(step, "stderr") != "":
            problem = "stderr is not empty"
        return problem

    return judge


def judge_verdicts(allowed: list[Verdict]) -> Judge:
    """The whole job's verdict is one of the allowed ones (DMOJ's testsuite `expect`; Judge0's Accepted)."""

    def judge(result: JobResult) -> str | None:
        if result.verdict in allowed:
            return None
        return f"verdict {result.verdict}, expected {' or '.join(str(v) for v in allowed)}"

    return judge


def glot_normal(stdout: str) -> str:
    return stdout.rstrip().replace('"', "").lower()


def judge_glot(expected: str) -> Judge:
    """glot's image tester: no error, empty stderr, stdout right-trimmed, unquoted, lowercased equals."""

    def judge(result: JobResult) -> str | None:
        problem = _compiled(result)
        step = run_step(result)
        if problem is None and result.verdict != Verdict.ACCEPTED:
            problem = "the run failed"
        elif problem is None and glot_normal(text(step)) != glot_normal(expected):
            problem = f"normalized stdout is not {glot_normal(expected)!r}"
        elif problem is None and text(step, "stderr") != "":
            problem = "stderr is not empty"
        return problem

    return judge


# ---------------------------------------------------------------------------------------------------- mapping


def by_name(registry: Registry, name: str) -> Language | None:
    try:
        return registry.get(FLAVOURS.get(name, name))
    except UnknownLanguage:
        return None


def piston_language(registry: Registry, language: str, aliases: list[str]) -> Language | None:
    """Piston resolves a request by a runtime's language or one of its aliases; prefer the language name."""
    for lang in registry.languages:
        if lang.piston_name == language:
            return lang
    for lang in registry.languages:
        if language in lang.piston_aliases:
            return lang
    ours = {lang.name: lang for lang in registry.languages
            if {language, *aliases} & {lang.piston_name, *lang.piston_aliases} - {None}}  # fmt: skip
    if len(ours) > 1:
        raise ValueError(f"Piston language {language!r} {aliases} matches several of ours: {sorted(ours)}")
    return next(iter(ours.values()), None)


def judge0_family(name: str) -> str:
    """'C (GCC 7.4.0)' and 'C (Clang 7.0.1)' → 'c'; Python 2 and 3 are different languages: 'python2'/'python3'."""
    base, _, rest = name.partition("(")
    family = base.strip().lower()
    if family.startswith("python"):
        major = re.search(r"\d", family) or re.search(r"\d", rest)
        family = f"python{major.group() if major else ''}"
    return family


def judge0_language(registry: Registry, language_id: int, names: dict[int, str]) -> Language | None:
    lang = registry.by_judge0_id.get(language_id)
    if lang is not None:
        return lang
    family = judge0_family(names[language_id])
    for lang in registry.languages:
        if family in {judge0_family(names[i]) for i in lang.judge0_ids if i in names}:
            return lang
    return None


def memory_mib(memory_kb: int) -> int:
    """DMOJ limits are in KB (KiB); ours are whole MiB. Cases whose KB limit would be rounded are listed."""
    return max(1, math.ceil(memory_kb / 1024))


# ---------------------------------------------------------------------------------------------------- planning


def _spec(language: Language, file_name: str, source: str, **fields: Any) -> JobSpec:
    fields.setdefault("limits", RUN_LIMITS)
    fields.setdefault("compile_limits", COMPILE_LIMITS)
    return JobSpec.model_validate({"language": language.name, "files": [{"name": file_name, "content": source}],
                                   **fields})  # fmt: skip


def _unregistered(corpus: str, case_id: str, what: str, label: str) -> Case:
    return Case(corpus, case_id, reason=f"no registered language for {what}", unregistered=label)


def plan_piston(data: dict[str, Any], registry: Registry) -> list[Case]:
    """Latest version of each runtime first; an older version's test that is the same program is a duplicate."""
    order = sorted(data["cases"], key=lambda c: not c["latest_for_runtime"])
    kept: dict[tuple[str, str, str], str] = {}  # (runtime, language, stripped source) → id of the case that runs
    planned: dict[str, Case] = {}
    for case in order:
        lang = piston_language(registry, case["language"], case["aliases"])
        if lang is None:
            planned[case["id"]] = _unregistered(
                "piston_tests", case["id"], f"Piston language {case['language']!r}", case["language"]
            )
            continue
        key = (case["runtime"], case["language"], case["source"].strip())
        if key in kept:
            reason = f"same program as {kept[key]} (an older Piston version of that runtime; we run one version)"
            planned[case["id"]] = Case("piston_tests", case["id"], reason=reason)
            continue
        kept[key] = case["id"]
        tests = [{"stdin": case["stdin"], "args": case["args"]}]
        planned[case["id"]] = Case("piston_tests", case["id"], lang.name, _spec(lang, case["filename"], case["source"],
                                   tests=tests), judge_piston)  # fmt: skip
    return [planned[c["id"]] for c in data["cases"]]


def _dmoj_executors(selftests: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """DMOJ executor id → (its language, its -std value)."""
    return {c["executor"]: (c["language"], c["std"]) for c in selftests["cases"]}


def _std_options(std: str | None) -> list[str]:
    return [f"-std={std}"] if std else []


def plan_dmoj_selftests(data: dict[str, Any], registry: Registry) -> list[Case]:
    cases = []
    for case in data["cases"]:
        lang = by_name(registry, case["language"])
        if lang is None:
            cases.append(
                _unregistered("dmoj_selftests", case["id"], f"DMOJ language {case['language']!r}", case["executor"])
            )
            continue
        source, adapted = case["source"], None
        if case["executor"] == "RUST":
            source = DMOJ_RUST_CRATE_USES.sub("", source)
            adapted = "dropped the `use <crate> as _;` lines (DMOJ's cargo crates), as the corpus note says"
        spec = _spec(lang, f"{case['test_name']}.{case['ext']}", source, compile_options=_std_options(case["std"]),
                     tests=[{"stdin": case["stdin"]}])  # fmt: skip
        cases.append(Case("dmoj_selftests", case["id"], lang.name, spec,
                          judge_dmoj_selftest(case["expected_stdout"]), adapted=adapted))  # fmt: skip
    return cases


def plan_dmoj_testsuite(data: dict[str, Any], selftests: dict[str, Any], registry: Registry) -> list[Case]:
    """Compile once, run every test case with the submission's time and memory limits, standard (token) checker."""
    executors = _dmoj_executors(selftests)
    cases = []
    for problem in data["problems"]:
        if problem["checker"] != "standard":
            raise ValueError(f"{problem['problem']}: checker {problem['checker']!r} is not mapped")
        tests = [{"id": str(i), "stdin": t["stdin"], "expected_output": t["expected_output"]}
                 for i, t in enumerate(problem["test_cases"], start=1)]  # fmt: skip
        for sub in problem["submissions"]:
            language, std = executors[sub["language"]]
            lang = by_name(registry, language)
            if lang is None:
                what = f"DMOJ executor {sub['language']} ({language})"
                cases.append(_unregistered("dmoj_testsuite", sub["id"], what, sub["language"]))
                continue
            seconds = float(sub["time_limit_s"])
            limits = {"cpu_time_s": seconds, "wall_time_s": 3 * seconds,
                      "memory_mib": memory_mib(sub["memory_limit_kb"]), "output_kib": DMOJ_OUTPUT_KIB}  # fmt: skip
            expect = sub["expect"] if isinstance(sub["expect"], list) else [sub["expect"]]
            spec = _spec(lang, sub["file_name"], sub["source"], compile_options=_std_options(std), tests=tests,
                         checker={"kind": "token"}, limits=limits, compile_limits=DMOJ_COMPILE_LIMITS,
                         stop_on_first_failure=True)  # fmt: skip
            cases.append(Case("dmoj_testsuite", sub["id"], lang.name, spec,
                              judge_verdicts([DMOJ_VERDICTS[v] for v in expect])))  # fmt: skip
    return cases


def judge0_names(data: dict[str, Any], languages: dict[str, Any]) -> dict[int, str]:
    """Judge0's language names by id: its table, plus the IDE's names for the newer ids (98-105)."""
    names = {c["language_id"]: c["language_name"] for c in data["cases"]}
    names.update({lang["id"]: lang["name"] for lang in languages["languages"]})
    return names


def plan_judge0(data: dict[str, Any], languages: dict[str, Any], registry: Registry) -> list[Case]:
    names = judge0_names(data, languages)
    cases = []
    for case in data["cases"]:
        lang = judge0_language(registry, case["language_id"], names)
        if lang is None:
            what = f"Judge0 language {case['language_id']} ({case['language_name']})"
            cases.append(_unregistered("judge0_ide_samples", case["id"], what, case["language_name"]))
            continue
        options = shlex.split(case["compiler_options"] or "")
        spec = _spec(lang, case["file_name"], case["source"], compile_options=options, checker={"kind": "judge0"},
                     tests=[{"stdin": case["stdin"], "expected_output": case["expected_output"]}])  # fmt: skip
        cases.append(Case("judge0_ide_samples", case["id"], lang.name, spec, judge_verdicts([Verdict.ACCEPTED])))
    return cases


def plan_glot(data: dict[str, Any], registry: Registry) -> list[Case]:
    cases = []
    for case in data["cases"]:
        lang = by_name(registry, case["language"])
        if lang is None:
            cases.append(
                _unregistered("glot_examples", case["id"], f"glot language {case['language']!r}", case["language"])
            )
            continue
        spec = _spec(lang, case["file_name"], case["source"], tests=[{"stdin": case["stdin"]}])
        cases.append(Case("glot_examples", case["id"], lang.name, spec, judge_glot(case["expected_stdout"])))
    return cases


def _mapped(corpus_dir: Path, name: str, registry: Registry) -> list[Case]:
    data = load(corpus_dir, name)
    if name == "piston_tests":
        return plan_piston(data, registry)
    if name == "dmoj_selftests":
        return plan_dmoj_selftests(data, registry)
    if name == "dmoj_testsuite":
        return plan_dmoj_testsuite(data, load(corpus_dir, "dmoj_selftests"), registry)
    if name == "judge0_ide_samples":
        return plan_judge0(data, load(corpus_dir, "judge0_languages"), registry)
    if name == "glot_examples":
        return plan_glot(data, registry)
    raise ValueError(f"unknown corpus file {name!r}")


def plan(corpus_dir: Path, name: str, registry: Registry) -> Plan:
    """Every case of one corpus file; the explicit list in not_applicable.toml overrides the mapping."""
    listed = load_not_applicable().get(name, {})
    cases = [replace(c, spec=None, judge=None, reason=listed[c.id]) if c.id in listed else c
             for c in _mapped(corpus_dir, name, registry)]  # fmt: skip
    return Plan(name, cases)


@cache
def cached_registry() -> Registry:
    """The registry the plans were made with (one snapshot per session, even while TOML files are added)."""
    return Registry.load()


@cache
def cached_plan(corpus_dir: Path, name: str) -> Plan:
    """For test collection: one plan per corpus file per session, over the installed registry."""
    return plan(corpus_dir, name, cached_registry())


# ---------------------------------------------------------------------------------------------------- pytest

# {case id: (passed, seconds)} for this session, kept in pytest's config stash (no module-level state).
OUTCOMES = pytest.StashKey[dict[str, tuple[bool, float]]]()


def collect(name: str) -> Plan:
    """The plan for a test module; the only allowed skip: the corpus is not on this machine."""
    directory = conformance_dir()
    if not directory.is_dir():
        pytest.skip(f"conformance corpus not found at {directory} (set CELLBLOCK_CONFORMANCE_DIR)",
                    allow_module_level=True)  # fmt: skip
    return cached_plan(directory, name)


def case_id(case: Case) -> str:
    return case.id


def outcomes(config: pytest.Config) -> dict[str, tuple[bool, float]]:
    return config.stash.setdefault(OUTCOMES, {})


def run_case(engine: Engine, case: Case, request: pytest.FixtureRequest) -> None:
    """Run one applicable case through the real sandbox and judge it the corpus's way."""
    assert case.spec is not None and case.judge is not None
    started = time.monotonic()
    result = engine.run(case.spec)
    problem = case.judge(result)
    outcomes(request.config)[case.id] = (problem is None, time.monotonic() - started)
    assert problem is None, f"{case.id} on {case.language}: {problem}\n  {describe(result)}"


def summary_lines(plans: list[Plan], ran: dict[str, tuple[bool, float]] | None = None, *,
                  every_case: bool = False) -> list[str]:  # fmt: skip
    """Per corpus file: applicable / passed / not applicable (time taken), then the not-applicable cases with
    their reasons; cases in languages we do not register are grouped by language unless `every_case`."""
    ran = ran or {}
    lines = []
    for p in plans:
        applicable = p.applicable()
        done = [ran[c.id] for c in applicable if c.id in ran]
        not_run = f", {len(applicable) - len(done)} not run in this session" if len(done) < len(applicable) else ""
        lines.append(f"{p.corpus}: {len(p.cases)} cases, {len(applicable)} applicable, "
                     f"{sum(ok for ok, _ in done)} passed{not_run}, {len(p.not_applicable())} not applicable "
                     f"({sum(s for _, s in done):.1f} s)")  # fmt: skip
    for p in plans:
        lines += [f"  adapted  {c.id}: {c.adapted}" for c in p.applicable() if c.adapted]
        grouped = [c for c in p.not_applicable() if c.unregistered and c.reason and
                   c.reason.startswith("no registered language") and not every_case]  # fmt: skip
        lines += [f"  n/a  {c.id}: {c.reason}" for c in p.not_applicable() if c not in grouped]
        if grouped:
            counts: dict[str, int] = {}
            for c in grouped:
                counts[c.unregistered or ""] = counts.get(c.unregistered or "", 0) + 1
            names = ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in counts.items())
            lines.append(f"  n/a  {len(grouped)} {p.corpus} cases, no registered language for: {names}")
    return lines


def main() -> None:
    """``python -m tests.conformance.corpus``: print the plan (no sandbox needed)."""
    plans = [cached_plan(conformance_dir(), name) for name in CORPORA]
    for p in plans:
        print(f"{p.corpus}: applicable " + ", ".join(f"{c.id}→{c.language}" for c in p.applicable()))
    print("\n".join(summary_lines(plans, every_case=True)))


if __name__ == "__main__":
    main()
