"""Which isolation ran a step is visible: `RawResult.isolation` (+ `isolation_note`) and `StepResult.isolation`.

Through the real sandbox: under each setting a run reports the sandbox that really ran it, and a run that a warm
setting sends fresh says so, with the reason in the result's note and in the log (host.Sandbox.run).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cellblock.config import Settings
from cellblock.engine import Engine
from cellblock.errors import SandboxFailure
from cellblock.languages.registry import Registry
from cellblock.local import sweep_slots
from cellblock.models import JobResult, JobSpec, Verdict
from cellblock.sandbox.host import NOTE_NOT_MAIN_THREAD, Sandbox, SandboxHost
from cellblock.sandbox.mounts import is_mount, mount_tmpfs
from cellblock.sandbox.spec import RawResult, RunLimits, RunSpec
from cellblock.sandbox.warm import SlotBroken, WarmSlot

pytestmark = pytest.mark.sandbox

C_SOURCE = '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n'
PY_SOURCE = "print('hi')\n"
LIMITS = RunLimits(cpu_time_s=1, wall_time_s=5, memory_kib=64 * 1024, processes=8, output_bytes=4096,
                   file_size_bytes=4096)  # fmt: skip
HostFor = Callable[..., SandboxHost]


@pytest.fixture
def host_for(data_dir: Path) -> Iterator[HostFor]:
    """host_for(isolation, **settings): a SandboxHost of its own; its warm slots are given back afterwards."""
    made: list[SandboxHost] = []

    def make(isolation: str, **fields: Any) -> SandboxHost:
        made.append(SandboxHost(Settings(data_dir=data_dir, isolation=isolation, **fields)))
        return made[-1]

    yield make
    for host in made:
        host.close_warm()


def job(host: SandboxHost, registry: Registry, language: str, source: str, **fields: Any) -> JobResult:
    spec = JobSpec.model_validate({"language": language, "files": [{"name": "main", "content": source}], **fields})
    result = Engine(host.settings, registry, host).run(spec)
    assert result.verdict == Verdict.ACCEPTED, result
    return result


def isolations(result: JobResult) -> list[str]:
    """Each step's isolation: the compile's (if any), then every test's."""
    steps = [result.compile, *(t.run for t in result.tests)]
    return [step.isolation for step in steps if step is not None]


def raw_run(host: SandboxHost, **fields: Any) -> RawResult:
    """One `/bin/true` in a slot of `host`, straight through Sandbox.run (the note is not on the wire)."""
    with host.slot() as sandbox, sandbox.workspace():
        return sandbox.run(RunSpec(argv=["/bin/true"], limits=LIMITS, **fields))


def test_under_warm_a_compiled_job_runs_warm(host_for: HostFor, registry: Registry) -> None:
    host = host_for("warm", warm_slots=1)
    assert isolations(job(host, registry, "c", C_SOURCE, tests=[{}, {}])) == ["warm", "warm", "warm"]
    raw = raw_run(host)
    assert (raw.outcome, raw.isolation, raw.isolation_note) == ("ok", "warm", None)


def test_under_warm_python_runs_prewarmed_or_warm_without_prewarm_runs(host_for: HostFor, registry: Registry) -> None:
    prewarmed = host_for("warm", warm_slots=1, prewarm_runs=50)
    assert isolations(job(prewarmed, registry, "python3", PY_SOURCE, tests=[{}, {}])) == ["prewarmed", "prewarmed"]
    plain = host_for("warm", warm_slots=1, prewarm_runs=0)
    assert isolations(job(plain, registry, "python3", PY_SOURCE)) == ["warm"]


def test_under_warm_only_the_main_thread_gets_warm_slots(host_for: HostFor) -> None:
    """A slot's sandbox dies with the thread that started it (PR_SET_PDEATHSIG): a self-test thread pool that
    started warm slots left them dead, their bwrap zombies, and their slots' locks held for the worker's life.
    Other threads run fresh, say why, and hold no slot afterwards; the main thread still runs warm."""
    host = host_for("warm", warm_slots=2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        from_threads = list(pool.map(lambda _: raw_run(host), range(2)))
    assert [(r.outcome, r.isolation, r.isolation_note) for r in from_threads] == [
        ("ok", "fresh", NOTE_NOT_MAIN_THREAD)] * 2  # fmt: skip
    assert host._warm_count == 0 and host._warm_idle == []
    raw = raw_run(host)
    assert (raw.outcome, raw.isolation, raw.isolation_note) == ("ok", "warm", None)


def test_under_warm_shared_a_job_runs_warm_shared(host_for: HostFor, registry: Registry) -> None:
    host = host_for("warm-shared", warm_slots=1, prewarm_runs=50)  # no zygote in shared mode, whatever the setting
    assert isolations(job(host, registry, "c", C_SOURCE)) == ["warm-shared", "warm-shared"]
    assert isolations(job(host, registry, "python3", PY_SOURCE)) == ["warm-shared"]


def test_under_fresh_everything_is_fresh_without_a_note(host_for: HostFor, registry: Registry) -> None:
    host = host_for("fresh", allow_network=True)
    assert isolations(job(host, registry, "c", C_SOURCE)) == ["fresh", "fresh"]
    for fields in ({}, {"network": True}):
        raw = raw_run(host, **fields)
        assert (raw.outcome, raw.isolation, raw.isolation_note) == ("ok", "fresh", None)


def test_a_network_run_under_warm_runs_fresh_and_says_why(
    host_for: HostFor, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    host = host_for("warm", warm_slots=1, allow_network=True)
    result = job(host, registry, "c", C_SOURCE, network=True)
    assert isolations(result) == ["warm", "fresh"]  # the compile has no network: warm; the run is not eligible
    with caplog.at_level(logging.DEBUG, logger="cellblock.sandbox.host"):
        raw = raw_run(host, network=True)
    assert (raw.outcome, raw.isolation, raw.isolation_note) == ("ok", "fresh", "network access")
    assert [(r.levelname, "network access" in r.getMessage()) for r in caplog.records] == [("DEBUG", True)]


def test_a_custom_checker_runs_fresh_in_its_own_box(host_for: HostFor, registry: Registry) -> None:
    host = host_for("warm", warm_slots=1)
    checker = {"kind": "custom", "language": "python3", "source": "import sys\nsys.exit(0)\n"}
    assert isolations(job(host, registry, "c", C_SOURCE, tests=[{"expected_output": "hi"}], checker=checker)) == [
        "warm", "warm"]  # fmt: skip  # the job's steps; the checker's run is not a step of the result
    with host.slot() as sandbox, sandbox.workspace("checker") as box:
        raw = sandbox.run(RunSpec(argv=["/bin/true"], limits=LIMITS, box_dir=box))
    assert (raw.isolation, raw.isolation_note) == ("fresh", "own box (custom checker)")


def test_a_request_too_large_for_a_slot_runs_fresh(host_for: HostFor) -> None:
    big = {f"BIG{i}": "x" * 50_000 for i in range(3)}  # 150 KB: over one message (slotproto.MAX_MESSAGE)
    raw = raw_run(host_for("warm", warm_slots=1), env=big)
    assert (raw.outcome, raw.isolation, raw.isolation_note) == ("ok", "fresh", "request too large for a warm slot")


def test_more_jobs_than_warm_slots_run_fresh_and_say_so(host_for: HostFor) -> None:
    host = host_for("warm", warm_slots=1)
    with host.slot() as first, first.workspace():
        assert first.run(RunSpec(argv=["/bin/true"], limits=LIMITS)).isolation == "warm"
        raw = raw_run(host)  # the one warm slot is busy
    assert (raw.outcome, raw.isolation, raw.isolation_note) == ("ok", "fresh", "no warm slot free (all 1 busy)")
    assert raw_run(host).isolation == "warm"  # and free again afterwards


def test_a_slot_that_fails_twice_sends_the_run_fresh_with_a_warning(
    host_for: HostFor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    host = host_for("warm", warm_slots=1)

    def broken(self: WarmSlot, *args: Any) -> RawResult:
        raise SlotBroken("the helper is gone (injected)", before_go=True)

    with monkeypatch.context() as patch, caplog.at_level(logging.DEBUG, logger="cellblock.sandbox.host"):
        patch.setattr(WarmSlot, "run", broken)
        raw = raw_run(host)
    note = "warm slot failed twice: the helper is gone (injected)"
    assert (raw.outcome, raw.isolation, raw.isolation_note) == ("ok", "fresh", note)
    assert [(r.levelname, note in r.getMessage()) for r in caplog.records] == [("WARNING", True)]
    assert raw_run(host).isolation == "warm"


def test_a_slot_that_cannot_start_sends_the_job_fresh(
    host_for: HostFor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    host = host_for("warm", warm_slots=1)

    def refuse(self: WarmSlot) -> None:
        raise SandboxFailure("the warm slot did not start: refused for the test")

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger="cellblock.sandbox.host"):
        patch.setattr(WarmSlot, "start", refuse)
        raw = raw_run(host)
    assert (raw.outcome, raw.isolation) == ("ok", "fresh")
    assert raw.isolation_note == "warm slot could not start: the warm slot did not start: refused for the test"
    assert [r.levelname for r in caplog.records] == ["WARNING"]  # once, by the pool


def test_a_job_waiting_for_a_slot_takes_whichever_comes_free(host_for: HostFor) -> None:
    """Every slot busy: the waiter must take the first one that comes free. It used to block on slot 0's lock,
    which a warm slot holds for its whole life: a worker's job then waited for good while other slots were free."""
    host = host_for("warm", max_slots=2)
    held = [host._lock_a_slot() for _ in range(2)]
    assert sorted(index for _, index in held) == [0, 1]
    got: list[tuple[int, int]] = []
    waiter = threading.Thread(target=lambda: got.append(host._lock_a_slot()), daemon=True)
    waiter.start()
    time.sleep(0.2)
    assert got == [], "took a slot while every one was held"
    slot1 = next(fd for fd, index in held if index == 1)
    os.close(slot1)  # slot 1 comes free; slot 0 stays held (as by a warm slot, for good)
    waiter.join(timeout=5)
    try:
        assert [index for _, index in got] == [1], "still waiting though slot 1 is free"
    finally:
        for fd, _ in [*got, *(h for h in held if h[1] == 0)]:
            os.close(fd)


def test_a_stopped_service_sweep_unmounts_its_boxes_even_in_slots_another_process_holds(host_for: HostFor) -> None:
    """`cellblock serve` sweeps at its stop, its workers gone. A killed worker's /box under its data dir must go
    even when the slot's machine-wide lock is held by another service at that moment (the idle-slot sweep skips
    such a slot): the full suite under warm left one /box mounted under a test service's data dir this way."""
    host = host_for("warm")
    with slot_with_a_killed_holders_box(host) as sandbox:  # "another service" holds the slot now
        sweep_slots(host.settings)
        assert not is_mount(sandbox.box)


def test_a_warm_slot_never_adopts_a_box_left_mounted_by_a_killed_holder(host_for: HostFor) -> None:
    """A killed worker leaves its warm /box mounted, with its job's files in it. The sweep that removes it runs
    only when the slot's dirty marker is there, and that marker is machine-wide while slot dirs are per data dir:
    another service's process may have swept its own dir for this slot and removed it. The next warm slot here
    must still start on an empty /box (the full suite under warm saw main.py there: FileExistsError)."""
    host = host_for("warm")
    with slot_with_a_killed_holders_box(host) as sandbox:
        (sandbox.box / "main.py").write_text("the killed job's\n")
        (host.settings.slot_lock_dir / f"slot{sandbox.index}.dirty").unlink()  # as the other service's sweep left it
        sandbox.start_warm([])
        assert is_mount(sandbox.box) and list(sandbox.box.iterdir()) == []


@contextmanager
def slot_with_a_killed_holders_box(host: SandboxHost) -> Iterator[Sandbox]:
    """A slot of `host`, held here, whose /box is mounted as a killed worker leaves it; given back afterwards."""
    fd, index = host._lock_a_slot()
    sandbox = Sandbox(host, index, fd)
    try:
        sandbox._prepare_dirs()
        sandbox.box.mkdir(mode=0o755, exist_ok=True)
        mount_tmpfs(sandbox.box, 1 << 20, 64, sandbox.uid, sandbox.uid)
        yield sandbox
    finally:
        sandbox.close_warm()  # stops a warm sandbox if one started, unmounts and removes /box
        sandbox._remove_dirs()
        os.close(fd)
