"""The plan itself: not_applicable.toml names real cases with real reasons, every corpus case is accounted for
exactly once, and the language mapping follows each corpus's naming (no sandbox needed).
"""

from __future__ import annotations

import pytest

from tests.conformance import corpus
from tests.conftest import conformance_dir

PLANS = {name: corpus.collect(name) for name in corpus.CORPORA}
DIRECTORY = conformance_dir()
DERIVED = ("no registered language for ", "same program as ")


def test_every_listed_case_exists_with_a_reason() -> None:
    listed = corpus.load_not_applicable()
    assert set(listed) == set(corpus.CORPORA), "one table per corpus file, named after it"
    for name, table in listed.items():
        unknown = set(table) - set(corpus.corpus_case_ids(DIRECTORY, name))
        assert not unknown, f"{name}: not_applicable.toml lists ids that are not in the corpus: {sorted(unknown)}"
        empty = [case_id for case_id, reason in table.items() if len(reason.strip()) < 20]
        assert not empty, f"{name}: give a real reason for {empty}"


@pytest.mark.parametrize("name", corpus.CORPORA)
def test_every_case_is_planned_once(name: str) -> None:
    plan = PLANS[name]
    assert [c.id for c in plan.cases] == corpus.corpus_case_ids(DIRECTORY, name)
    listed = corpus.load_not_applicable()[name]
    for case in plan.cases:
        if case.applicable:
            assert case.spec is not None and case.judge is not None and case.language == case.spec.language
        else:
            assert case.id in listed or case.reason.startswith(DERIVED), case  # type: ignore[union-attr]


def test_dmoj_non_portable_other_platform_and_sub_mib_cases_are_listed() -> None:
    """The corpus's portable=false, other platforms and KB limits a MiB cgroup cannot hold: listed by hand."""
    listed = corpus.load_not_applicable()["dmoj_testsuite"]
    data = corpus.load(DIRECTORY, "dmoj_testsuite")
    for sub in (s for p in data["problems"] for s in p["submissions"]):
        must = (not sub["portable"] or sub["platform"] not in corpus.DMOJ_PLATFORMS
                or sub["memory_limit_kb"] < 1024)  # fmt: skip
        assert not must or sub["id"] in listed, f"{sub['id']} must be in not_applicable.toml with its reason"


# Languages no corpus file has a case for, each with why; they are still proven by their self-test and by
# tests/e2e/programs/<name>.toml (sum, runtime error, compilation error) through the real sandbox.
WITHOUT_CORPUS_CASES = {
    "multifile": "Judge0's multi-file program (bash scripts from a zip): tests/service/test_judge0_api.py and "
    "test_judge0_clients.py run it with compile and run scripts",
    "basic": "no corpus has a yabasic program (Piston's and Judge0's BASIC is FreeBASIC, another dialect)",
    "zsh": "no corpus engine runs Zsh",
    "vala": "no corpus engine runs Vala",
    "haxe": "no corpus engine runs Haxe",
    "sml": "no corpus engine runs Standard ML",
}


def test_every_registered_language_meets_the_corpus() -> None:
    registry = corpus.cached_registry()
    languages = {c.language for plan in PLANS.values() for c in plan.applicable()}
    names = {lang.name for lang in registry.languages}
    missing = names - languages - set(WITHOUT_CORPUS_CASES)
    assert not missing, f"registered languages with no applicable conformance case: {sorted(missing)}"
    stale = set(WITHOUT_CORPUS_CASES) & languages
    assert not stale, f"these have corpus cases now, drop them from WITHOUT_CORPUS_CASES: {sorted(stale)}"


def test_judge0_flavours_map_to_one_language_and_python2_stays_apart() -> None:
    assert corpus.judge0_family("C (GCC 7.4.0)") == corpus.judge0_family("C (Clang 7.0.1)") == "c"
    assert corpus.judge0_family("C++ (GCC 9.2.0)") == "c++" != corpus.judge0_family("C# (Mono 6.6.0.161)")
    assert corpus.judge0_family("Python (2.7.17)") == "python2"
    assert corpus.judge0_family("Python (3.8.1)") == corpus.judge0_family("Python 3 (name not known)") == "python3"
    plan = {c.id: c for c in PLANS["judge0_ide_samples"].cases}
    registry = corpus.cached_registry()
    c_lang = registry.by_judge0_id.get(50)
    for flavour in (48, 49, 75, 103, 104):  # C (GCC 7.4.0), C (GCC 8.3.0), C (Clang 7.0.1), C (GCC 14.1.0), C
        owner = registry.by_judge0_id.get(flavour) or c_lang  # a language owning the id (c-clang has 75) wins
        assert plan[f"judge0-ide/{flavour}"].language == (owner.name if owner else None)
    assert plan["judge0-ide/70"].language is None, "a Python 2 sample must never run on Python 3"


def test_piston_and_dmoj_python2_never_map_to_python3() -> None:
    piston = {c.id: c for c in PLANS["piston_tests"].cases}
    assert piston["piston/python/2.7.18/test.py"].language is None
    dmoj = {c.id: c for c in PLANS["dmoj_selftests"].cases}
    assert dmoj["dmoj/PY2"].language is None and dmoj["dmoj/PYPY"].language is None


def test_dmoj_language_standards_and_limits_are_applied() -> None:
    selftests = {c.id: c for c in PLANS["dmoj_selftests"].applicable()}
    for case_id, option in (("dmoj/C", "-std=c99"), ("dmoj/CPP17", "-std=c++17"), ("dmoj/CPP03", "-std=c++03")):
        if case_id in selftests:
            assert selftests[case_id].spec.compile_options == [option]  # type: ignore[union-attr]
    suite = {c.id: c for c in PLANS["dmoj_testsuite"].applicable()}
    wall = suite.get("dmoj-testsuite/helloworld/cpp_wall_clock@posix")
    if wall is not None:
        assert wall.spec is not None
        assert wall.spec.limits.cpu_time_s == 2 and wall.spec.limits.memory_mib == 64
        assert wall.spec.checker.kind == "token" and wall.spec.compile_options == ["-std=c++11"]


def test_memory_kb_rounds_up_to_whole_mib() -> None:
    assert [corpus.memory_mib(kb) for kb in (1, 64, 1024, 1025, 65535, 65536)] == [1, 1, 1, 2, 64, 64]
