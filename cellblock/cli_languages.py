"""`cellblock languages`: what this machine can run, and installing more on demand.

    cellblock languages [--json] [--no-self-test]      every language: ok, failing (why) or not installed
    cellblock languages install NAME…|--all|--core     apt-get the missing packages, then self-test them

States: ok (installed, self-test passed through the real sandbox), failing (installed but its version cannot
be read or its self-test fails; the reason says which), not-installed (its Debian packages are missing),
installed (with --no-self-test: present, not tested).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from cellblock.cli_support import EXIT_NOT_ACCEPTED, fail
from cellblock.config import Settings
from cellblock.errors import CellblockError, UserError
from cellblock.languages.registry import Language, Registry
from cellblock.toolchains import Status, evaluate_many, fingerprint


def _engine(settings: Settings, registry: Registry) -> Any:
    from cellblock.engine import Engine
    from cellblock.sandbox.host import SandboxHost

    return Engine(settings, registry, SandboxHost(settings))  # raises SandboxUnavailable: no sandbox, no test


def _statuses(settings: Settings, registry: Registry, languages: list[Language], self_test: bool) -> dict[str, Status]:
    if self_test:
        return evaluate_many(_engine(settings, registry), languages, settings.slot_count())
    return {lang.name: Status(False, lang.host_version(), "not tested (--no-self-test)") if fingerprint(lang)
            else Status(False, None, f"not installed: cellblock languages install {lang.name}", installed=False)
            for lang in languages}  # fmt: skip


def _state(status: Status, self_test: bool) -> str:
    return "installed" if status.installed and not self_test else status.state


def _row(lang: Language, status: Status, self_test: bool) -> dict[str, Any]:
    return {"name": lang.name, "display_name": lang.display_name, "version": status.version,
            "state": _state(status, self_test), "reason": None if status.passed else status.reason,
            "judge0_ids": lang.judge0_ids, "piston_name": lang.piston_name, "core": lang.core,
            "debian_packages": lang.debian_packages}  # fmt: skip


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        reason = f"  {row['reason']}" if row["state"] in ("failing", "not-installed") else ""
        click.echo(f"{row['name']:<14} {row['version'] or '-':<12} {row['state']:<14} {row['display_name']}{reason}")
    counts = {state: sum(row["state"] == state for row in rows) for state in
              ("ok", "installed", "failing", "not-installed")}  # fmt: skip
    summary = ", ".join(f"{n} {state.replace('-', ' ')}" for state, n in counts.items() if n)
    hint = " (cellblock languages install NAME… or --all)" if counts["not-installed"] else ""
    click.echo(f"{len(rows)} languages: {summary}{hint}")


@click.group("languages", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--no-self-test", is_flag=True, help="Only list; don't run the self-tests.")
@click.pass_context
def languages_group(ctx: click.Context, as_json: bool, no_self_test: bool) -> None:
    """List every language: ok, failing (with the reason) or not installed. `install` adds languages."""
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings()
    registry = Registry.load(settings.languages_dir)
    try:
        statuses = _statuses(settings, registry, registry.languages, not no_self_test)
    except CellblockError as exc:
        fail(exc)
    _print_rows([_row(lang, statuses[lang.name], not no_self_test) for lang in registry.languages], as_json)


@languages_group.command("install")
@click.argument("names", nargs=-1, metavar="NAME…")
@click.option("--all", "every", is_flag=True, help="Every language Cellblock knows.")
@click.option("--core", is_flag=True, help="The core set (what scripts/setup installs).")
@click.option("--no-self-test", is_flag=True, help="Install only; don't self-test afterwards.")
@click.option("--quiet", is_flag=True, help="Print only failures (and apt's errors).")
@click.option("--json", "as_json", is_flag=True, help="Print the installed languages' states as JSON.")
def install_command(names: tuple[str, ...], every: bool, core: bool, no_self_test: bool, quiet: bool,
                    as_json: bool) -> None:  # fmt: skip
    """Install languages' Debian packages (as root), then self-test them through the sandbox.

    Exit 0 when every named language is installed and passes; 1 when one fails its self-test; 2 for an
    unknown name or a missing root; 3 when apt-get or the sandbox fails. A running worker takes the new
    languages within seconds (its toolchain watch), without a restart.
    """
    from cellblock.languages.install import install_packages, missing_packages, packages_of

    settings = Settings()
    registry = Registry.load(settings.languages_dir)
    say = (lambda _line: None) if quiet or as_json else click.echo
    try:
        languages = _chosen(registry, names, every, core)
        if os.geteuid() != 0:
            raise UserError("installing languages needs root (apt-get and the sandbox): sudo cellblock languages "
                            "install …")  # fmt: skip
        missing = missing_packages(packages_of(languages))
        if missing:
            install_packages(missing, say, quiet=quiet or as_json)
        else:
            say(f"Debian packages: all present for {len(languages)} language(s)")
        statuses = _statuses(settings, registry, languages, not no_self_test)
    except CellblockError as exc:
        fail(exc)
    rows = [_row(lang, statuses[lang.name], not no_self_test) for lang in languages]
    bad = [row for row in rows if row["state"] in ("failing", "not-installed")]
    if as_json:
        _print_rows(rows, as_json=True)
    elif quiet:
        for row in bad:
            click.echo(f"{row['name']}: {row['state']}: {row['reason']}", err=True)
    else:
        _print_rows(rows, as_json=False)
    sys.exit(EXIT_NOT_ACCEPTED if bad else 0)


def _chosen(registry: Registry, names: tuple[str, ...], every: bool, core: bool) -> list[Language]:
    if sum((bool(names), every, core)) != 1:
        raise UserError("name the languages to install, or pass --all or --core (one of the three)", field="names")
    if every:
        return registry.languages
    if core:
        return [lang for lang in registry.languages if lang.core]
    chosen = {registry.get(name).name for name in names}  # UnknownLanguage: exit 2, with the closest name
    return [lang for lang in registry.languages if lang.name in chosen]
