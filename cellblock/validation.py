"""Check a JobSpec against the server's settings and languages before anything runs.

Shared by the engine and (later) the API, which must reject bad input without importing the engine.
Every error names its field: ``files[1].name``, ``limits.cpu_time_s``, ``language``…
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from cellblock.config import LimitBounds, Settings
from cellblock.errors import LimitAboveMaximum, UnknownLanguage, ValidationFailed
from cellblock.files import decode_content, validate_relative_path
from cellblock.languages.registry import Language, Registry
from cellblock.models import CustomChecker, JobSpec, Limits

# A step's limits with defaults filled in, still in user units (before language tweaks).
ResolvedLimits = LimitBounds


@dataclass(frozen=True)
class ValidJob:
    spec: JobSpec
    language: Language
    files: list[tuple[str, bytes]]  # (name in /box, content); the first is the main file
    run_limits: ResolvedLimits
    compile_limits: ResolvedLimits
    checker_language: Language | None


def resolve_limits(requested: Limits, default: LimitBounds, maximum: LimitBounds, field: str) -> ResolvedLimits:
    values: dict[str, float] = {}
    for name in LimitBounds.model_fields:
        value = getattr(requested, name)
        top = getattr(maximum, name)
        if value is not None and value > top:
            raise LimitAboveMaximum(
                f"{field}.{name}={value} is above the server's maximum {top}", field=f"{field}.{name}"
            )
        values[name] = value if value is not None else getattr(default, name)
    return LimitBounds(**values)


def _validate_files(spec: JobSpec, language: Language, settings: Settings) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    names: set[str] = set()
    total = 0
    for index, file in enumerate(spec.files):
        validate_relative_path(file.name, f"files[{index}].name")
        data = decode_content(file, f"files[{index}].content")
        total += len(data)
        if index == 0:
            if not data.strip():
                raise ValidationFailed(
                    "files[0].content is empty: there is no program to run", field="files[0].content"
                )
            name = language.main_file_name(data.decode("utf-8", "replace"))
        else:
            name = file.name
        if name in names:
            raise ValidationFailed(f"files[{index}].name {name!r} is given twice", field=f"files[{index}].name")
        names.add(name)
        out.append((name, data))
    if total > settings.max_source_kib * 1024:
        raise ValidationFailed(
            f"files add up to {total} bytes, above the {settings.max_source_kib} KiB cap", field="files"
        )
    return out


def _validate_callback(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(f"callback_url {url!r} must be an http:// or https:// URL with a host",
                               field="callback_url")  # fmt: skip


def validate_job(spec: JobSpec, settings: Settings, registry: Registry) -> ValidJob:
    language = registry.get(spec.language)
    files = _validate_files(spec, language, settings)
    if spec.callback_url is not None:
        _validate_callback(spec.callback_url)
    if spec.network and not settings.allow_network:
        raise ValidationFailed("network access is disabled on this server", field="network")
    if len(spec.tests) > settings.max_tests:
        raise ValidationFailed(f"{len(spec.tests)} tests, above the maximum of {settings.max_tests}", field="tests")
    if spec.interactive and (len(spec.tests) > 1 or spec.runs > 1):
        raise ValidationFailed("an interactive job has one run: no tests list, runs = 1", field="interactive")
    if spec.tests and spec.stdin is not None:
        raise ValidationFailed("give either stdin or tests, not both (each test has its own stdin)", field="stdin")
    for index, pattern in enumerate(spec.output_files):
        validate_relative_path(pattern, f"output_files[{index}]", allow_glob=True)
    checker_language = None
    if isinstance(spec.checker, CustomChecker):
        try:
            checker_language = registry.get(spec.checker.language)
        except UnknownLanguage as exc:
            raise UnknownLanguage(exc.message, field="checker.language") from exc
        if not spec.checker.source.strip():
            raise ValidationFailed("checker.source is empty", field="checker.source")
    return ValidJob(
        spec=spec,
        language=language,
        files=files,
        run_limits=resolve_limits(spec.limits, settings.default_run, settings.max_run, "limits"),
        compile_limits=resolve_limits(
            spec.compile_limits, settings.default_compile, settings.max_compile, "compile_limits"
        ),
        checker_language=checker_language,
    )
