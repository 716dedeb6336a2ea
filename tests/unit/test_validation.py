"""Job validation (`cellblock.validation.validate_job`): every refusal names its field."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from cellblock.config import DEFAULT_COMPILE, DEFAULT_RUN, MAX_COMPILE, MAX_RUN, Settings
from cellblock.errors import LimitAboveMaximum, UnknownLanguage, UserError, ValidationFailed
from cellblock.languages.registry import Registry
from cellblock.models import JobSpec
from cellblock.validation import ResolvedLimits, validate_job

LIMIT_FIELDS = list(ResolvedLimits.model_fields)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("CELLBLOCK_"):
            monkeypatch.delenv(key)
    return Settings(data_dir=tmp_path)


def spec(**fields: Any) -> JobSpec:
    data: dict[str, Any] = {"language": "python3", "files": [{"name": "main.py", "content": "print(1)\n"}]}
    data.update(fields)
    return JobSpec.model_validate(data)


def refused(job: JobSpec, settings: Settings, registry: Registry, kind: type[UserError] = ValidationFailed) -> Any:
    with pytest.raises(kind) as info:
        validate_job(job, settings, registry)
    assert type(info.value) is kind
    return info.value


def test_a_plain_job_gets_the_defaults(settings: Settings, registry: Registry) -> None:
    valid = validate_job(spec(), settings, registry)
    assert valid.language.name == "python3"
    assert valid.files == [("main.py", b"print(1)\n")]
    assert valid.run_limits == ResolvedLimits(**DEFAULT_RUN.model_dump())
    assert valid.compile_limits == ResolvedLimits(**DEFAULT_COMPILE.model_dump())
    assert valid.checker_language is None


def test_requested_limits_up_to_the_maximum_are_kept(settings: Settings, registry: Registry) -> None:
    valid = validate_job(spec(limits=MAX_RUN.model_dump(), compile_limits={"memory_mib": 100}), settings, registry)
    assert valid.run_limits == ResolvedLimits(**MAX_RUN.model_dump())
    assert valid.compile_limits.memory_mib == 100
    assert valid.compile_limits.cpu_time_s == DEFAULT_COMPILE.cpu_time_s


@pytest.mark.parametrize("name", LIMIT_FIELDS)
def test_run_limit_above_maximum(settings: Settings, registry: Registry, name: str) -> None:
    top = getattr(MAX_RUN, name)
    above = top + 0.5 if isinstance(top, float) else top + 1
    error = refused(spec(limits={name: above}), settings, registry, LimitAboveMaximum)
    assert error.field == f"limits.{name}"
    assert str(top) in error.message
    assert error.code == "limit_above_maximum"


@pytest.mark.parametrize("name", LIMIT_FIELDS)
def test_compile_limit_above_maximum(settings: Settings, registry: Registry, name: str) -> None:
    top = getattr(MAX_COMPILE, name)
    error = refused(spec(compile_limits={name: top * 2}), settings, registry, LimitAboveMaximum)
    assert error.field == f"compile_limits.{name}"


def test_maxima_come_from_the_settings(tmp_path: Path, registry: Registry) -> None:
    tight = Settings(data_dir=tmp_path, max_run={**MAX_RUN.model_dump(), "cpu_time_s": 3.0})
    validate_job(spec(limits={"cpu_time_s": 3.0}), tight, registry)
    error = refused(spec(limits={"cpu_time_s": 3.5}), tight, registry, LimitAboveMaximum)
    assert error.field == "limits.cpu_time_s"


def test_unknown_language_lists_known_ones_and_the_closest(settings: Settings, registry: Registry) -> None:
    error = refused(spec(language="pythn3"), settings, registry, UnknownLanguage)
    assert error.field == "language"
    assert "'pythn3'" in error.message
    assert "Did you mean 'python3'?" in error.message
    for lang in registry.languages:
        assert lang.name in error.message.split("Known:")[1]


def test_unknown_language_with_nothing_close(settings: Settings, registry: Registry) -> None:
    error = refused(spec(language="zzzzzzzz"), settings, registry, UnknownLanguage)
    assert "Did you mean" not in error.message
    assert "Known: " in error.message


def test_language_aliases_and_case(settings: Settings, registry: Registry) -> None:
    assert validate_job(spec(language="PY3"), settings, registry).language.name == "python3"


@pytest.mark.parametrize("content", ["", "   \n\t\n"])
def test_empty_source(settings: Settings, registry: Registry, content: str) -> None:
    error = refused(spec(files=[{"name": "main.py", "content": content}]), settings, registry)
    assert error.field == "files[0].content"


def test_empty_base64_source(settings: Settings, registry: Registry) -> None:
    error = refused(spec(files=[{"name": "m", "content": "", "encoding": "base64"}]), settings, registry)
    assert error.field == "files[0].content"


def test_main_file_takes_the_language_name(settings: Settings, registry: Registry) -> None:
    job = spec(files=[{"name": "whatever.txt", "content": "print(1)"}, {"name": "lib/util.py", "content": "x=1"}])
    assert [name for name, _ in validate_job(job, settings, registry).files] == ["main.py", "lib/util.py"]


def test_duplicate_names(settings: Settings, registry: Registry) -> None:
    files = [{"name": "a.py", "content": "print(1)"}, {"name": "x.py", "content": ""},
             {"name": "x.py", "content": ""}]  # fmt: skip
    error = refused(spec(files=files), settings, registry)
    assert error.field == "files[2].name"
    assert "twice" in error.message


def test_an_extra_file_may_not_replace_the_main_file(settings: Settings, registry: Registry) -> None:
    files = [{"name": "prog.py", "content": "print(1)"}, {"name": "main.py", "content": "import os"}]
    error = refused(spec(files=files), settings, registry)
    assert error.field == "files[1].name"


def test_bad_file_names_and_contents_name_their_index(settings: Settings, registry: Registry) -> None:
    files = [{"name": "main.py", "content": "print(1)"}, {"name": "../escape", "content": ""}]
    assert refused(spec(files=files), settings, registry).field == "files[1].name"
    files = [{"name": "main.py", "content": "print(1)"}, {"name": "d", "content": "%%", "encoding": "base64"}]
    assert refused(spec(files=files), settings, registry).field == "files[1].content"
    files = [{"name": "main.py", "content": "print(1)"}, {"name": "ok", "content": "bad \udc80"}]
    assert refused(spec(files=files), settings, registry).field == "files[1].content"


def test_binary_extra_file(settings: Settings, registry: Registry) -> None:
    blob = bytes(range(256))
    files = [{"name": "main.py", "content": "print(1)"},
             {"name": "data.bin", "content": base64.b64encode(blob).decode(), "encoding": "base64"}]  # fmt: skip
    assert validate_job(spec(files=files), settings, registry).files[1] == ("data.bin", blob)


def test_total_source_size_cap(tmp_path: Path, registry: Registry) -> None:
    small = Settings(data_dir=tmp_path, max_source_kib=1)
    validate_job(spec(files=[{"name": "m", "content": "#" * 1024}]), small, registry)
    files = [{"name": "m", "content": "#" * 600}, {"name": "x", "content": "#" * 600}]
    assert refused(spec(files=files), small, registry).field == "files"


def test_stdin_and_tests_conflict(settings: Settings, registry: Registry) -> None:
    error = refused(spec(stdin="1\n", tests=[{"stdin": "2\n"}]), settings, registry)
    assert error.field == "stdin"
    validate_job(spec(stdin="1\n"), settings, registry)
    validate_job(spec(tests=[{"stdin": "2\n"}]), settings, registry)


def test_too_many_tests(tmp_path: Path, registry: Registry) -> None:
    few = Settings(data_dir=tmp_path, max_tests=2)
    validate_job(spec(tests=[{}, {}]), few, registry)
    assert refused(spec(tests=[{}, {}, {}]), few, registry).field == "tests"


def test_network_only_when_the_server_allows_it(tmp_path: Path, settings: Settings, registry: Registry) -> None:
    error = refused(spec(network=True), settings, registry)
    assert error.field == "network"
    assert settings.allow_network is False
    validate_job(spec(network=True), Settings(data_dir=tmp_path, allow_network=True), registry)


def test_output_file_patterns(settings: Settings, registry: Registry) -> None:
    validate_job(spec(output_files=["*.txt", "out/**/*.csv"]), settings, registry)
    error = refused(spec(output_files=["*.txt", "../../etc/*"]), settings, registry)
    assert error.field == "output_files[1]"
    assert refused(spec(output_files=["/etc/passwd"]), settings, registry).field == "output_files[0]"


def test_custom_checker(settings: Settings, registry: Registry) -> None:
    valid = validate_job(spec(checker={"kind": "custom", "language": "PYTHON", "source": "import sys"}), settings,
                         registry)  # fmt: skip
    assert valid.checker_language is not None and valid.checker_language.name == "python3"
    error = refused(spec(checker={"kind": "custom", "language": "cobolx", "source": "x"}), settings, registry,
                    UnknownLanguage)  # fmt: skip
    assert error.field == "checker.language"
    error = refused(spec(checker={"kind": "custom", "language": "python3", "source": " \n"}), settings, registry)
    assert error.field == "checker.source"
