"""The language registry (`cellblock.languages.registry`): every TOML in the package is valid and unambiguous.

These run over whatever languages the package holds, so a new ``<name>.toml`` is checked without editing
this file.
"""

from __future__ import annotations

import collections
import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from cellblock.errors import UnknownLanguage
from cellblock.languages.registry import Language, Registry, expand

TOML_FILES = sorted(f.name for f in resources.files("cellblock.languages").iterdir() if f.name.endswith(".toml"))
PLACEHOLDER = re.compile(r"\{(\w*)\}")
KNOWN_PLACEHOLDERS = {"source", "stem", "memory_mib"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def _raw(file_name: str) -> dict[str, object]:
    return tomllib.loads(resources.files("cellblock.languages").joinpath(file_name).read_text())


def test_every_toml_in_the_package_loads(registry: Registry) -> None:
    assert TOML_FILES, "no language files found in the package"
    assert sorted(f"{lang.name}.toml" for lang in registry.languages) == TOML_FILES


def test_the_first_two_languages_are_there(registry: Registry) -> None:
    assert {"c", "python3"} <= {lang.name for lang in registry.languages}


def test_names_and_aliases_are_unique_case_insensitively(registry: Registry) -> None:
    keys = [key.lower() for lang in registry.languages for key in (lang.name, *lang.aliases)]
    duplicates = [key for key, count in collections.Counter(keys).items() if count > 1]
    assert duplicates == []


def test_names_are_lowercase_identifiers(registry: Registry) -> None:
    for lang in registry.languages:
        assert re.fullmatch(r"[a-z][a-z0-9_+#.-]*", lang.name), lang.name


def test_judge0_ids_are_unique(registry: Registry) -> None:
    ids = [i for lang in registry.languages for i in lang.judge0_ids]
    duplicates = [i for i, count in collections.Counter(ids).items() if count > 1]
    assert duplicates == []
    assert len(registry.by_judge0_id) == len(ids)
    for lang in registry.languages:
        for i in lang.judge0_ids:
            assert registry.by_judge0_id[i] is lang


def test_piston_names_are_unique(registry: Registry) -> None:
    # Piston clients ask for a language by name or alias; each must lead to one language.
    owners: dict[str, set[str]] = collections.defaultdict(set)
    for lang in registry.languages:
        for key in (lang.piston_name, *lang.piston_aliases):
            if key:
                owners[key.lower()].add(lang.name)
    assert {key: names for key, names in owners.items() if len(names) > 1} == {}


def test_lookups_are_case_insensitive(registry: Registry) -> None:
    for lang in registry.languages:
        for key in (lang.name, *lang.aliases):
            assert registry.get(key) is lang
            assert registry.get(key.upper()) is lang
            assert registry.get(key.title()) is lang


def test_known_aliases(registry: Registry) -> None:
    assert registry.get("py").name == "python3"
    assert registry.get("GCC").name == "c"
    assert registry.by_judge0_id[71].name == "python3"
    assert registry.by_judge0_id[50].name == "c"


def test_unknown_language(registry: Registry) -> None:
    with pytest.raises(UnknownLanguage) as info:
        registry.get("pyhton3")
    assert info.value.field == "language"
    assert "Did you mean 'python3'?" in info.value.message
    assert all(lang.name in info.value.message for lang in registry.languages)


@pytest.mark.parametrize("file_name", TOML_FILES)
def test_each_language_is_complete(file_name: str, registry: Registry) -> None:
    lang = registry.get(file_name.removesuffix(".toml"))
    assert lang.display_name and lang.run and lang.version_command and lang.debian_packages
    assert lang.self_test.source.strip()
    # Judge0's multi-file program (language 89) runs a script named `run`, without an extension, as Judge0 does.
    assert "/" not in lang.source_file and ("." in lang.source_file or lang.source_file == "run")
    for argv in (lang.compile or [], lang.run, lang.version_command):
        for item in argv:
            assert set(PLACEHOLDER.findall(item)) <= KNOWN_PLACEHOLDERS | {"compile_options"}, item
    expanded = expand(lang.run, source="main.x", memory_mib=256, compile_options=["-DX"])
    assert all("{" not in item for item in expanded)
    if lang.compile:
        compiled = expand(lang.compile, source=lang.source_file, memory_mib=256, compile_options=["-O0", "-g"])
        if "{compile_options}" in lang.compile:
            assert "-O0" in compiled and "-g" in compiled
        assert all("{" not in item for item in compiled)
    for value in (*lang.env.values(), *lang.compile_env.values()):
        assert set(PLACEHOLDER.findall(value)) <= {"memory_mib"}, value  # the only one an environment takes
    environment = {**lang.run_environment(300), **lang.compile_environment(300)}
    assert all("{" not in value for value in environment.values())
    re.compile(lang.version_pattern)
    if lang.source_name_pattern:
        assert re.compile(lang.source_name_pattern).groups >= 1


@pytest.mark.parametrize("file_name", TOML_FILES)
def test_no_unknown_keys_are_silently_dropped(file_name: str) -> None:
    # extra="forbid": a typo such as `alias = [...]` must fail loading, not be ignored.
    data = _raw(file_name)
    data["alias"] = ["x"]
    with pytest.raises(ValueError, match="alias"):
        Language.model_validate(data)


def test_expand_placeholders() -> None:
    argv = ["cc", "-o", "{stem}", "{compile_options}", "{source}", "-Xmx{memory_mib}m"]
    assert expand(argv, source="Main.java", memory_mib=128, compile_options=["-a", "b c"]) == [
        "cc", "-o", "Main", "-a", "b c", "Main.java", "-Xmx128m",
    ]  # fmt: skip
    assert expand(argv, source="m.c", memory_mib=1, compile_options=[]) == ["cc", "-o", "m", "m.c", "-Xmx1m"]


def test_environment_values_follow_the_memory_limit() -> None:
    lang = (
        Registry.load()
        .get("python3")
        .model_copy(update={"env": {"HEAP": "{memory_mib}m", "KEEP": "x"}, "compile_env": {"CC_HEAP": "{memory_mib}"}})
    )
    assert lang.run_environment(128) == {"HEAP": "128m", "KEEP": "x"}
    assert lang.compile_environment(64) == {"HEAP": "64m", "KEEP": "x", "CC_HEAP": "64"}


def _lang(name: str, aliases: list[str]) -> Language:
    return Language.model_validate({
        "name": name, "display_name": name, "aliases": aliases, "debian_packages": ["x"],
        "version_command": ["x", "--version"], "source_file": "main.x", "run": ["./main"],
        "self_test": {"source": "x"},
    })  # fmt: skip


def test_registry_refuses_a_clash() -> None:
    with pytest.raises(ValueError, match="used twice"):
        Registry([_lang("foo", ["f"]), _lang("bar", ["F"])])
    with pytest.raises(ValueError, match="used twice"):
        Registry([_lang("foo", []), _lang("bar", ["FOO"])])


def test_extra_dir_adds_languages_and_checks_file_names(tmp_path: Path) -> None:
    text = resources.files("cellblock.languages").joinpath("c.toml").read_text()
    extra = text.replace('name = "c"', 'name = "c99x"', 1).replace('aliases = ["gcc", "c11", "c17"]', "aliases = []")
    extra = extra.replace("judge0_ids = [50]", "judge0_ids = [99999]")
    (tmp_path / "c99x.toml").write_text(extra)
    registry = Registry.load(tmp_path)
    assert registry.get("C99X").name == "c99x"
    assert registry.by_judge0_id[99999].name == "c99x"
    (tmp_path / "misnamed.toml").write_text(extra.replace('name = "c99x"', 'name = "other"', 1))
    with pytest.raises(ValueError, match="must be named after the language"):
        Registry.load(tmp_path)


def test_extra_dir_cannot_shadow_a_builtin_name(tmp_path: Path) -> None:
    text = resources.files("cellblock.languages").joinpath("python3.toml").read_text()
    (tmp_path / "py2.toml").write_text(text.replace('name = "python3"', 'name = "py2"', 1))
    with pytest.raises(ValueError, match="used twice"):
        Registry.load(tmp_path)  # its aliases py, py3, python are python3's


def test_a_file_size_floor_applies_to_that_language_only() -> None:
    from cellblock.config import DEFAULT_RUN
    from cellblock.engine import run_limits

    registry = Registry.load()
    small = DEFAULT_RUN.model_copy(update={"file_size_kib": 1024})
    floored = registry.get("python3").model_copy(
        update={"limits": registry.get("python3").limits.model_copy(update={"min_file_size_mib": 64})}
    )
    assert run_limits(small, floored, compiling=False).file_size_bytes == 64 << 20
    assert run_limits(small, registry.get("python3"), compiling=False).file_size_bytes == 1 << 20
    big = DEFAULT_RUN.model_copy(update={"file_size_kib": 128 * 1024})
    assert run_limits(big, floored, compiling=False).file_size_bytes == 128 << 20


def test_start_up_cpu_is_added_to_a_run_but_not_to_a_compile() -> None:
    from cellblock.config import DEFAULT_RUN
    from cellblock.engine import run_limits

    registry = Registry.load()
    clojure = registry.get("clojure")
    assert clojure.limits.extra_cpu_time_s >= 1.5  # its measured start-up (clojure.toml)
    run = run_limits(DEFAULT_RUN, clojure, compiling=False)
    assert run.cpu_time_s == DEFAULT_RUN.cpu_time_s + clojure.limits.extra_cpu_time_s
    assert run.wall_time_s == DEFAULT_RUN.wall_time_s + clojure.limits.extra_cpu_time_s
    assert run_limits(DEFAULT_RUN, clojure, compiling=True).cpu_time_s == DEFAULT_RUN.cpu_time_s
    assert run_limits(DEFAULT_RUN, registry.get("python3"), compiling=False).cpu_time_s == DEFAULT_RUN.cpu_time_s
