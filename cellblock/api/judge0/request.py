"""A Judge0 submission request → a JobSpec (+ the Judge0Meta echoed by `fields=*`), or Judge0's 422 hash.

Rules follow Judge0 1.13.1's model validations (`app/models/submission.rb`) and messages, with this server's
own defaults and maxima (what /config_info reports):

* limits in Judge0 units (seconds, KB) become ours (seconds, MiB rounded up, KiB);
* ``cpu_time_limit: 0`` means "no limit" to isolate: here it is the server's maximum;
* ``cpu_extra_time`` and ``stack_limit`` are checked and echoed; we stop a program exactly at its limit and
  every run has a 256 MiB stack;
* ``expected_output`` becomes one test compared with the engine's ``judge0`` rule;
* ``compiler_options`` / ``command_line_arguments``: Judge0's ``$&;<>|``` stripping, then split like a shell
  would (shlex), never run by one;
* ``additional_files``: a zip unpacked into the job's files (`archive.py`); language 89 takes its ``run`` and
  ``compile`` scripts from it;
* a value Judge0 would decode leniently (bad base64) is refused here, naming the field.
"""

from __future__ import annotations

import math
import shlex
from typing import Any

from cellblock.api.judge0 import archive, catalog
from cellblock.api.judge0.errors import Invalid
from cellblock.api.judge0.render import Judge0Meta
from cellblock.config import Settings
from cellblock.languages.registry import Registry
from cellblock.models import BuiltinChecker, JobSpec, Limits, SourceFile, TestCase

Errors = dict[str, list[str]]
UNSAFE = str.maketrans("", "", "$&;<>|`")  # what Judge0 strips from compiler options and arguments
MAX_OPTION_LENGTH = 512
MAX_EXTRACT_FILES = 1000


def _number(raw: Any) -> float | None:
    """Rails' numericality: numbers and numeric strings; None for anything else."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw) if math.isfinite(raw) else None
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    return None


def _flag(raw: Any) -> bool:
    return raw is True or (isinstance(raw, str) and raw.strip().lower() in ("true", "1", "t", "yes", "on"))


def _bound(text: float | int) -> str:
    return str(text)


class _Reader:
    """Reads one submission's fields, collecting Judge0's error messages instead of stopping at the first."""

    def __init__(self, params: dict[str, Any], settings: Settings) -> None:
        self.params, self.settings = params, settings
        self.errors: Errors = {}

    def fail(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def present(self, name: str) -> bool:
        value = self.params.get(name)
        return value is not None and not (isinstance(value, str) and not value.strip())

    def limit(self, name: str, default: float, low: float, high: float, *, low_inclusive: bool = True,
              integer: bool = False) -> float:  # fmt: skip
        if not self.present(name):
            return default
        value = _number(self.params[name])
        if value is None:
            self.fail(name, "is not a number")
            return default
        if integer and value != int(value):
            self.fail(name, "must be an integer")
        if value > high:
            self.fail(name, f"must be less than or equal to {_bound(high)}")
        elif low_inclusive and value < low:
            self.fail(name, f"must be greater than or equal to {_bound(low)}")
        elif not low_inclusive and value <= low:
            self.fail(name, f"must be greater than {_bound(low)}")
        return value

    def text(self, name: str, decode: bool) -> bytes | None:
        raw = self.params.get(name)
        if raw is None:
            return None
        if not isinstance(raw, str):
            raw = str(raw)
        if not decode:
            return raw.encode()
        try:
            return archive.decode_base64(raw)
        except archive.BadArchive:
            self.fail(name, "is not valid base64")
            return None

    def option(self, name: str) -> list[str]:
        raw = self.params.get(name)
        if raw is None or not str(raw).strip():
            return []
        text = str(raw)
        if len(text) > MAX_OPTION_LENGTH:
            self.fail(name, f"is too long (maximum is {MAX_OPTION_LENGTH} characters)")
            return []
        try:
            return shlex.split(text.translate(UNSAFE))
        except ValueError as exc:
            self.fail(name, f"cannot be split into arguments ({exc})")
            return []


def _utf8(reader: _Reader, name: str, data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        reader.fail(name, "is not valid UTF-8")
        return None


def _language(reader: _Reader, registry: Registry) -> tuple[int, Any]:
    raw = reader.params.get("language_id")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        reader.fail("language_id", "can't be blank")
        return 0, None
    value = _number(raw)
    language_id = int(value) if value is not None and value == int(value) else None
    if language_id is None:
        reader.fail("language_id", f"language with id {raw} doesn't exist")
        return 0, None
    if language_id in catalog.ARCHIVED_IDS:
        reader.fail("language_id", f"language with id {language_id} is archived and cannot be used anymore")
        return language_id, None
    language = catalog.language_of(registry, language_id)
    if language is None:
        reader.fail("language_id", f"language with id {language_id} doesn't exist")
    return language_id, language


def _limits(reader: _Reader) -> tuple[float, ...]:
    """number_of_runs, cpu_time_limit, cpu_extra_time, wall_time_limit, memory_limit, stack_limit,
    max_processes_and_or_threads, max_file_size: checked against this server's bounds in Judge0 units."""
    run, top = reader.settings.default_run, reader.settings.max_run
    values = (
        reader.limit("number_of_runs", 1, 0, catalog.MAX_RUNS, low_inclusive=False, integer=True),
        reader.limit("cpu_time_limit", run.cpu_time_s, 0, top.cpu_time_s),
        reader.limit("cpu_extra_time", 0.0, 0, catalog.CPU_EXTRA_TIME_MAX_S),
        reader.limit("wall_time_limit", run.wall_time_s, 1, top.wall_time_s),
        reader.limit("memory_limit", run.memory_mib * 1024, 2048, top.memory_mib * 1024, integer=True),
        reader.limit("stack_limit", catalog.STACK_KB, 0, catalog.STACK_KB, integer=True),
        reader.limit("max_processes_and_or_threads", run.processes, 0, top.processes, low_inclusive=False,
                     integer=True),
        reader.limit("max_file_size", run.file_size_kib, 0, top.file_size_kib, integer=True),
    )  # fmt: skip
    for name in ("enable_per_process_and_thread_time_limit", "enable_per_process_and_thread_memory_limit"):
        if _flag(reader.params.get(name)):
            reader.fail(name, "this option cannot be enabled")  # we always measure the whole cgroup
    return values


def _files(reader: _Reader, project: bool, main_name: str) -> list[tuple[str, bytes]]:
    """The unpacked additional_files (language 89: they must hold the run script)."""
    if not reader.present("additional_files") or "additional_files" in reader.errors:
        return []
    try:
        files = archive.unpack(str(reader.params["additional_files"]), max_bytes=reader.settings.max_source_kib * 1024,
                               max_files=MAX_EXTRACT_FILES, skip="" if project else main_name)  # fmt: skip
    except archive.BadArchive as exc:
        reader.fail("additional_files", exc.message)
        return []
    if project and not any(name == "run" for name, _ in files):
        reader.fail("additional_files", "must contain a run script at the top of the zip")
    files.sort(key=lambda item: item[0] != "run")  # language 89: the run script is the main file
    return files


def translate(params: dict[str, Any], base64_encoded: bool, settings: Settings,
              registry: Registry, versions: dict[str, str]) -> tuple[JobSpec, Judge0Meta]:  # fmt: skip
    """Validate like Judge0 and build the job; raises Invalid with every problem found."""
    reader = _Reader(params, settings)
    top = settings.max_run
    language_id, language = _language(reader, registry)
    project = language_id == catalog.MULTIFILE_ID
    source = reader.text("source_code", base64_encoded)
    if project and source is not None and source.strip():
        reader.fail("source_code", "must be blank")
    elif not project and "source_code" not in reader.errors and (source is None or not source.strip()):
        reader.fail("source_code", "can't be blank")
    if project and not reader.present("additional_files"):
        reader.fail("additional_files", "can't be blank")
    stdin = _utf8(reader, "stdin", reader.text("stdin", base64_encoded))
    expected = _utf8(reader, "expected_output", reader.text("expected_output", base64_encoded))
    runs, cpu, extra, wall, memory, stack, procs, fsize = _limits(reader)
    network = _flag(reader.params.get("enable_network"))
    if network and not settings.allow_network:
        reader.fail("enable_network", "enabling network is not allowed")
    compile_options = reader.option("compiler_options")
    if compile_options and language is not None and (project or not language.compiled):
        reader.fail("compiler_options", "setting compiler options is only allowed for compiled languages")
    args = [] if project else reader.option("command_line_arguments")
    files: list[tuple[str, bytes]] = []
    main_name = language.source_file if language is not None else ""
    if language is not None and source is not None and not project:
        main_name = language.main_file_name(source.decode("utf-8", "replace"))
    files = _files(reader, project, main_name)
    callback = params.get("callback_url")
    callback = str(callback) if callback is not None and str(callback).strip() else None
    if reader.errors:
        raise Invalid(reader.errors)
    assert language is not None
    main = [] if project else [(main_name, source or b"")]
    spec = JobSpec(
        language=language.name,
        files=[_source_file(name, data) for name, data in main + files],
        compile_options=compile_options,
        args=args,
        stdin=None if expected is not None else (stdin or ""),
        tests=[TestCase(stdin=stdin or "", expected_output=expected)] if expected is not None else [],
        checker=BuiltinChecker(kind="judge0"),
        limits=Limits(
            cpu_time_s=cpu or top.cpu_time_s,
            wall_time_s=wall,
            memory_mib=math.ceil(memory / 1024),
            processes=int(procs),
            file_size_kib=max(1, int(fsize)),
        ),
        network=network,
        runs=int(runs),
        merge_stderr=_flag(params.get("redirect_stderr_to_stdout")),
        callback_url=callback,
    )
    meta = Judge0Meta(
        language_id=language_id, language_name=catalog.display_name(language, versions.get(language.name)),
        number_of_runs=int(runs), cpu_time_limit=cpu, cpu_extra_time=extra, wall_time_limit=wall,
        memory_limit=int(memory), stack_limit=int(stack), max_processes_and_or_threads=int(procs),
        max_file_size=int(fsize), compiler_options=_kept(params.get("compiler_options")),
        command_line_arguments=_kept(params.get("command_line_arguments")),
        redirect_stderr_to_stdout=spec.merge_stderr, callback_url=callback,
        additional_files=str(params["additional_files"]) if reader.present("additional_files") else None,
        enable_network=network, project=project,
    )  # fmt: skip
    return spec, meta


def _kept(raw: Any) -> str | None:
    return str(raw).translate(UNSAFE) if raw is not None and str(raw).strip() else None


def _source_file(name: str, data: bytes) -> SourceFile:
    try:
        return SourceFile(name=name, content=data.decode("utf-8"))
    except UnicodeDecodeError:
        import base64

        return SourceFile(name=name, content=base64.b64encode(data).decode("ascii"), encoding="base64")
