"""The operations files stay true to the code: the systemd units start real commands with real options, keep
the properties the docs promise, and every CELLBLOCK_* variable the docs name is one Cellblock reads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from cellblock.cli import main
from cellblock.config import Settings

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
DOCS = [
    ROOT / "README.md",
    ROOT / "docs" / "operations.md",
    *UNITS,
    ROOT / "deploy" / "systemd" / "cellblock.env.example",
]


def unit(path: Path) -> dict[str, list[str]]:
    """key → values of a unit file (systemd allows a key more than once, e.g. Environment=)."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def known_variables() -> set[str]:
    """CELLBLOCK_* names Cellblock reads: Settings fields, and the CLI options' own environment variables."""
    names = {f"CELLBLOCK_{name.upper()}" for name in Settings.model_fields}

    def walk(command: click.Command) -> None:
        for param in command.params:
            envvars = param.envvar if isinstance(param.envvar, list | tuple) else [param.envvar]
            names.update(v for v in envvars if isinstance(v, str))
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                walk(sub)

    walk(main)
    for source in (ROOT / "tests").rglob("*.py"):  # what the test suite itself reads (CELLBLOCK_CONFORMANCE_DIR)
        names.update(re.findall(r"environ(?:\.get\(|\[)\"(CELLBLOCK_[A-Z0-9_]+)\"", source.read_text()))
    for source in (ROOT / "cellblock").rglob("*.py"):  # names the code spells out (the SDK's CELLBLOCK_CA_FILE)
        names.update(re.findall(r"= \"(CELLBLOCK_[A-Z0-9_]+)\"", source.read_text()))
    return names


def test_there_are_units_for_the_api_the_worker_and_webhooks() -> None:
    assert {p.name for p in UNITS} == {"cellblock-api.service", "cellblock-worker.service",
                                       "cellblock-webhooks.service"}  # fmt: skip


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_exec_start_is_a_real_command_line(path: Path) -> None:
    (exec_start,) = unit(path)["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/bin/cellblock")
    main.make_context("cellblock", argv[1:], resilient_parsing=False)  # raises on an unknown command or option
    subcommand = main.commands[argv[1]]
    subcommand.make_context(argv[1], argv[2:])


def test_the_worker_unit_delegates_cgroups_and_gives_jobs_their_grace() -> None:
    worker = unit(ROOT / "deploy" / "systemd" / "cellblock-worker.service")
    assert worker["Delegate"] == ["yes"] and worker["KillMode"] == ["mixed"] and worker["User"] == ["root"]
    assert float(worker["TimeoutStopSec"][0]) > Settings().shutdown_grace_s
    assert any(v.startswith("CELLBLOCK_CGROUP_ROOT=/sys/fs/cgroup/") for v in worker["Environment"])


@pytest.mark.parametrize("name", ["cellblock-api.service", "cellblock-webhooks.service"])
def test_services_that_run_no_user_code_are_unprivileged(name: str) -> None:
    values = unit(ROOT / "deploy" / "systemd" / name)
    assert (
        values["User"] != ["root"] and values["NoNewPrivileges"] == ["yes"] and values["CapabilityBoundingSet"] == [""]
    )


def test_every_variable_the_docs_name_is_one_cellblock_reads() -> None:
    known = known_variables()
    for path in DOCS:
        named = set(re.findall(r"CELLBLOCK_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
        # Nested limits are spelled CELLBLOCK_MAX_RUN__CPU_TIME_S: the part before "__" is the Settings field.
        unknown = {n for n in named if n.split("__")[0] not in known}
        assert not unknown, f"{path.name} names settings Cellblock does not read: {sorted(unknown)}"
