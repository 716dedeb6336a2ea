"""`cellblock doctor`: every prerequisite, checked for real, each with how to fix it."""

from __future__ import annotations

from collections.abc import Callable

from cellblock.config import Settings
from cellblock.errors import CellblockError
from cellblock.languages.registry import Registry
from cellblock.sandbox.host import SandboxHost, prerequisite_problems


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

        engine = Engine(settings, Registry.load(), host)
    except CellblockError as exc:
        say(f"FAIL  {exc.message}")
        return 1
    say(f"ok    cgroup v{host.cgroups.version} under {settings.cgroup_root}")
    failed = 0
    for lang in engine.registry.languages:
        version = lang.host_version()
        if version is None:
            say(f"--    {lang.name}: not installed (apt-get install {' '.join(lang.debian_packages)})")
            continue
        try:
            passed, reason = engine.self_test(lang)
        except CellblockError as exc:
            passed, reason = False, exc.message
        failed += not passed
        say(f"{'ok  ' if passed else 'FAIL'}  {lang.name} {version}: self-test {reason}")
    return 1 if failed else 0
