"""Languages as data: one ``<name>.toml`` per language in this package, validated into `Language`.

A TOML file says only how the language differs: its file name, compile and run argv, packages, limit
tweaks and a self-test. Argv elements may use these placeholders:

``{source}`` the main file's name in /box · ``{stem}`` that name without its extension ·
``{memory_mib}`` the step's memory limit · ``{compile_options}`` (a whole element) the user's compile
flags, spliced in as separate arguments. Run arguments are appended after the run argv. `env` and
`compile_env` values may use ``{memory_mib}`` (a runtime whose heap cap is an environment variable).
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import tomllib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cellblock.errors import UnknownLanguage

SELF_TEST_STDIN = "echo: Hello, World!\n"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class LanguageLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address_space: bool = Field(
        False,
        description="Opt in to an RLIMIT_AS backstop (2 × memory + 64 MiB). Off by default: the memory verdict "
        "comes from the cgroup, and with RLIMIT_AS a big allocation fails (runtime error) instead of being an MLE.",
    )
    extra_processes: int = Field(0, ge=0, description="Threads the runtime needs on top of the user's limit.")
    extra_memory_mib: int = Field(0, ge=0, description="Runtime overhead added to the user's memory limit.")
    extra_cpu_time_s: float = Field(
        0,
        ge=0,
        le=30,
        description="The runtime's own start-up CPU, added to the user's CPU and wall limits of a run (not of a "
        "compile): a runtime that compiles its standard library at every start (Clojure) would otherwise spend "
        "most of a default limit before the user's first line.",
    )
    compile_address_space: bool = Field(False, description="The same backstop for the compiler.")
    min_file_size_mib: int = Field(
        0,
        ge=0,
        description="A floor under RLIMIT_FSIZE, for a runtime that grows an in-memory file of its own "
        "(Erlang's JIT maps its code through a memfd it ftruncates: 8-16 MiB).",
    )


class SelfTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="A program that copies stdin to stdout.")
    stdin: str = SELF_TEST_STDIN


class Language(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    display_name: str
    aliases: list[str] = []
    judge0_ids: list[int] = []
    judge0_name: str | None = Field(
        None,
        description="Judge0's name for it, `{v}` standing for our version: 'C (GCC {v})'. Default: "
        "display_name, then the version in brackets.",
    )
    piston_name: str | None = None
    piston_aliases: list[str] = []
    debian_packages: list[str]
    core: bool = Field(
        False, description="Installed by scripts/setup on every machine; the others by `cellblock languages install`."
    )
    version_command: list[str]
    version_pattern: str = r"(\d+(?:\.\d+)+)"
    source_file: str
    claims_extension: bool = Field(
        True,
        description="Whether a file with source_file's extension is taken for this language when none is "
        "named (`cellblock exec`, `cellblock run`); false where such files are usually data (plain text's .txt).",
    )
    source_name_pattern: str | None = Field(
        None, description="Regex over the source whose group 1 replaces the stem of source_file (Java's class)."
    )
    compile: list[str] | None = None
    run: list[str]
    toolchain: str | None = Field(
        None,
        description="The command whose presence means the language is installed, when compile and run "
        "start something more general (Groovy runs `java` with its jars; `groovy` tells it is installed).",
    )
    env: dict[str, str] = {}
    compile_env: dict[str, str] = {}
    ro_binds: list[str] = []
    prewarm: Literal["python"] | None = Field(
        None,
        description="With isolation=warm: run programs in a pre-warmed interpreter that forks per run "
        "(cellblock/sandbox/slothelper/zygote.py) instead of starting one. Only for run commands of the form "
        "`python3 [flags] {source} [args]`; see the README for what a program can tell.",
    )
    prewarm_modules: list[str] = Field(
        [],
        description="With `prewarm`: standard-library modules the pre-warmed interpreter imports once, before it "
        "forks, so that a program's `import` of them costs nothing. Each run gets its own copy (nothing it does to "
        "them outlives it); a run whose script directory holds a file or directory named like one of them, or "
        "that sets PYTHONPATH, starts without them (a bare start would import its own).",
    )
    limits: LanguageLimits = LanguageLimits()
    self_test: SelfTest

    @field_validator("prewarm_modules")
    @classmethod
    def _module_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not MODULE_NAME.fullmatch(name):
                raise ValueError(f"not a module name: {name!r}")
        return names

    @property
    def compiled(self) -> bool:
        return self.compile is not None

    def main_file_name(self, source: str) -> str:
        if self.source_name_pattern:
            match = re.search(self.source_name_pattern, source, re.MULTILINE)
            if match:
                return match.group(1) + Path(self.source_file).suffix
        return self.source_file

    def run_environment(self, memory_mib: int) -> dict[str, str]:
        return {key: value.format(memory_mib=memory_mib) for key, value in self.env.items()}

    def compile_environment(self, memory_mib: int) -> dict[str, str]:
        merged = {**self.env, **self.compile_env}
        return {key: value.format(memory_mib=memory_mib) for key, value in merged.items()}

    def toolchain_binary(self) -> str:
        return self.toolchain or (self.compile or self.run)[0]

    def installed(self) -> bool:
        return shutil.which(self.toolchain_binary(), path=SANDBOX_PATH) is not None

    def host_version(self) -> str | None:
        """Read from the toolchain itself (trusted host binary, never user code)."""
        if not self.installed():
            return None
        try:
            done = subprocess.run(
                self.version_command,
                capture_output=True,
                timeout=30,
                check=False,
                env={"PATH": SANDBOX_PATH, "HOME": "/nonexistent", "LANG": "C.UTF-8"},
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        match = re.search(self.version_pattern, (done.stdout + done.stderr).decode(errors="replace"))
        return match.group(1) if match else None


def expand(argv: list[str], *, source: str, memory_mib: int, compile_options: list[str]) -> list[str]:
    stem = Path(source).stem
    out: list[str] = []
    for item in argv:
        if item == "{compile_options}":
            out += compile_options
        else:
            out.append(item.format(source=source, stem=stem, memory_mib=memory_mib))
    return out


class Registry:
    """Every language we know, installed or not. Look up by name or alias, case-insensitively."""

    def __init__(self, languages: list[Language]) -> None:
        self.languages = sorted(languages, key=lambda lang: lang.name)
        self._index: dict[str, Language] = {}
        for lang in self.languages:
            for key in (lang.name, *lang.aliases):
                if key.lower() in self._index:
                    raise ValueError(f"language name or alias {key!r} is used twice")
                self._index[key.lower()] = lang

    @classmethod
    def load(cls, extra_dir: Path | None = None) -> Registry:
        langs = [
            _parse(f.name, f.read_text()) for f in resources.files(__package__).iterdir() if f.name.endswith(".toml")
        ]
        if extra_dir is not None:
            langs += [_parse(p.name, p.read_text()) for p in sorted(extra_dir.glob("*.toml"))]
        return cls(langs)

    def get(self, name: str) -> Language:
        lang = self._index.get(name.lower())
        if lang is None:
            raise UnknownLanguage(self._unknown_message(name), field="language")
        return lang

    def _unknown_message(self, name: str) -> str:
        known = sorted(self._index)
        close = difflib.get_close_matches(name.lower(), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown language {name!r}.{hint} Known: {', '.join(lang.name for lang in self.languages)}"

    def by_extension(self) -> list[Language]:
        """The languages a file's extension may name, core set first: where several share one (.c: c and
        c-clang; .py: python3 and pypy3), the first claiming it is what a bare file name means. Languages with
        `claims_extension = false` (plain text: a .txt file is usually data) are never guessed."""
        return sorted((lang for lang in self.languages if lang.claims_extension),
                      key=lambda lang: (not lang.core, lang.name))  # fmt: skip

    @cached_property
    def by_judge0_id(self) -> dict[int, Language]:
        return {i: lang for lang in self.languages for i in lang.judge0_ids}


def _parse(file_name: str, text: str) -> Language:
    data = tomllib.loads(text)
    lang = Language.model_validate(data)
    if f"{lang.name}.toml" != file_name:
        raise ValueError(f"{file_name}: the file must be named after the language ({lang.name}.toml)")
    return lang
