"""Judge0's static tables, filled with this server's truth: language ids and names, statuses, config, about.

Language ids are Judge0 CE 1.13.1's. Each of our languages answers to the ids in its TOML (`judge0_ids`, the
CE id of that language) and, for C and C++, to CE's other flavours of the same language that no entry of ours
owns (GCC 7.4/8.3; Clang 7 when c-clang/cpp-clang are not registered), so a client written for
"C (GCC 7.4.0)" keeps working on our one GCC, and every name shows our real version ("C (GCC 12.2.0)", from
`judge0_name` in the TOML). Ids 1-42 are Judge0's archived languages. Id 89 is the multi-file program
(`multifile.toml`).
"""

from __future__ import annotations

import shlex
from typing import Any

from cellblock.config import Settings
from cellblock.languages.registry import Language, Registry, expand

VERSION = "1.13.1"  # the SDK maps language aliases through /about's version, and knows only Judge0's
MULTIFILE_ID = 89
ARCHIVED_IDS = range(1, 43)
FLAVOUR_IDS = {48: 50, 49: 50, 75: 50, 52: 54, 53: 54, 76: 54}  # CE flavour id -> the CE id of our toolchain
ABOUT = {
    "version": VERSION,
    "homepage": "https://github.com/cellblock/cellblock",
    "source_code": "https://github.com/cellblock/cellblock",
    "maintainer": "Cellblock (a Judge0 CE 1.13.1 compatible API)",
}
DEFAULT_MEMORY_MIB = 256  # shown in commands that name the memory limit (the JVM's -Xmx)
CPU_EXTRA_TIME_MAX_S = 5.0  # accepted and echoed; we stop a program at its limit and measure exactly


def language_of(registry: Registry, language_id: int) -> Language | None:
    """The language that owns the id, else (an older flavour we have no entry for) the one it is a flavour of."""
    own = registry.by_judge0_id.get(language_id)
    return own if own is not None else registry.by_judge0_id.get(FLAVOUR_IDS.get(language_id, language_id))


def display_name(language: Language, version: str | None) -> str:
    if language.judge0_ids == [MULTIFILE_ID]:
        return "Multi-file program"
    template = language.judge0_name or language.display_name + " ({v})"
    return template.format(v=version or "unknown version")


def ids_of(language: Language, registry: Registry) -> list[int]:
    own = list(language.judge0_ids)
    return own + sorted(i for i, target in FLAVOUR_IDS.items() if target in own and i not in registry.by_judge0_id)


def active(registry: Registry, versions: dict[str, str]) -> list[tuple[int, Language, str]]:
    """(id, language, name) of every id a live worker can run, by id."""
    rows = [(i, lang, display_name(lang, versions.get(lang.name))) for lang in registry.languages
            if lang.name in versions for i in ids_of(lang, registry)]  # fmt: skip
    return sorted(rows, key=lambda row: row[0])


def _command(argv: list[str] | None, language: Language) -> str | None:
    """An argv as Judge0 shows a command: shell words, ``%s`` where compiler options go."""
    if argv is None:
        return None
    words = expand(argv, source=language.source_file, memory_mib=DEFAULT_MEMORY_MIB, compile_options=["%s"])
    return " ".join(word if word == "%s" else shlex.quote(word) for word in words)


def language_detail(language_id: int, language: Language, name: str) -> dict[str, Any]:
    if language_id == MULTIFILE_ID:
        return {"id": language_id, "name": name, "is_archived": False, "source_file": None, "compile_cmd": None,
                "run_cmd": None}  # fmt: skip
    return {"id": language_id, "name": name, "is_archived": False, "source_file": language.source_file,
            "compile_cmd": _command(language.compile, language),
            "run_cmd": _command(language.run, language)}  # fmt: skip


def statuses() -> list[dict[str, Any]]:
    from cellblock.api.judge0.render import STATUSES

    return [{"id": i, "description": text} for i, text in STATUSES.items()]


def config_info(settings: Settings) -> dict[str, Any]:
    """The 39 keys of Judge0's /config_info, with this server's own defaults and maxima (Judge0 units)."""
    run, top = settings.default_run, settings.max_run
    return {
        "maintenance_mode": False,
        "enable_wait_result": True,
        "enable_compiler_options": True,
        "allowed_languages_for_compile_options": [],
        "enable_command_line_arguments": True,
        "enable_submission_delete": True,
        "enable_callbacks": True,
        "callbacks_max_tries": settings.webhook_attempts,
        "callbacks_timeout": settings.webhook_timeout_s,
        "enable_additional_files": True,
        "max_queue_size": settings.max_backlog,
        "cpu_time_limit": run.cpu_time_s,
        "max_cpu_time_limit": top.cpu_time_s,
        "cpu_extra_time": 0.0,
        "max_cpu_extra_time": CPU_EXTRA_TIME_MAX_S,
        "wall_time_limit": run.wall_time_s,
        "max_wall_time_limit": top.wall_time_s,
        "memory_limit": run.memory_mib * 1024,
        "max_memory_limit": top.memory_mib * 1024,
        "stack_limit": STACK_KB,
        "max_stack_limit": STACK_KB,
        "max_processes_and_or_threads": run.processes,
        "max_max_processes_and_or_threads": top.processes,
        "enable_per_process_and_thread_time_limit": False,
        "allow_enable_per_process_and_thread_time_limit": False,
        "enable_per_process_and_thread_memory_limit": False,
        "allow_enable_per_process_and_thread_memory_limit": False,
        "max_file_size": run.file_size_kib,
        "max_max_file_size": top.file_size_kib,
        "number_of_runs": 1,
        "max_number_of_runs": MAX_RUNS,
        "redirect_stderr_to_stdout": False,
        "max_extract_size": settings.max_source_kib,
        "enable_batched_submissions": True,
        "max_submission_batch_size": settings.max_batch_jobs,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": False,
        "allow_enable_network": settings.allow_network,
        "enable_network": False,
    }


STACK_KB = 256 * 1024  # every run gets a 256 MiB stack (RunLimits.stack_kib); stack_limit is accepted and echoed
MAX_RUNS = 20  # JobSpec.runs' maximum
