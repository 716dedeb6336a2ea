"""`cellblock doctor`: every prerequisite, checked for real, each with how to fix it."""

from __future__ import annotations

from collections.abc import Callable

from cellblock.config import Settings
from cellblock.errors import CellblockError
from cellblock.languages.registry import Registry
from cellblock.sandbox.host import SandboxHost, prerequisite_problems
from cellblock.toolchains import evaluate_many


def run_doctor(settings: Settings, say: Callable[[str], None]) -> int:
    """Print a report; return 0 when the sandbox works and every installed language passes its self-test."""
    problems = prerequisite_problems(settings)
    for problem in problems:
        say(f"FAIL  {problem}")
    if problems:
        say("The sandbox cannot be set up: Cellblock refuses to run code until the above is fixed.")
        return 1
    say("ok    root, bubblewrap, prlimit, user namespaces, cgroups, seccomp")
    try:
        host = SandboxHost(settings)
        from cellblock.engine import Engine

        engine = Engine(settings, Registry.load(settings.languages_dir), host)
    except CellblockError as exc:
        say(f"FAIL  {exc.message}")
        return 1
    say(f"ok    cgroup v{host.cgroups.version} under {settings.cgroup_root}")
    statuses = evaluate_many(engine, engine.registry.languages, settings.slot_count())
    failed = 0
    missing = []
    for name, status in statuses.items():
        if not status.installed:
            missing.append(name)
            continue
        failed += not status.passed
        say(f"{'ok  ' if status.passed else 'FAIL'}  {name} {status.version or '-'}: "
            + ("self-test ok" if status.passed else status.reason))  # fmt: skip
    if missing:
        say(f"--    not installed: {', '.join(missing)} (cellblock languages install NAME… or --all)")
    return 1 if failed else 0
