"""warm-shared slots on cgroup v1 keep one run cgroup from run to run (cgroups.ReusedV1Run): what each run
reports must still be its own, and a cgroup that would change the next run's numbers or limits is not kept."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cellblock.config import Settings
from cellblock.sandbox.cgroups import REUSE_MAX_LEFT_BYTES, RunCgroup
from cellblock.sandbox.host import Sandbox, SandboxHost
from cellblock.sandbox.spec import RawResult, RunLimits, RunSpec

pytestmark = pytest.mark.sandbox

LIMITS = RunLimits(cpu_time_s=2, wall_time_s=10, memory_kib=64 * 1024, processes=8, output_bytes=4096,
                   file_size_bytes=64 << 20)  # fmt: skip


@pytest.fixture
def shared(data_dir: Path) -> Iterator[Sandbox]:
    host = SandboxHost(Settings(data_dir=data_dir, isolation="warm-shared", warm_slots=1))
    if host.cgroups.version != 1:
        pytest.skip("run cgroups are kept from run to run on cgroup v1 only")
    try:
        with host.slot() as sandbox, sandbox.workspace():
            yield sandbox
    finally:
        host.close_warm()


def run(sandbox: Sandbox, script: str, **limits: Any) -> RawResult:
    raw = sandbox.run(RunSpec(argv=["/bin/sh", "-c", script], limits=replace(LIMITS, **limits)))
    assert raw.isolation == "warm-shared", raw
    return raw


def kept(sandbox: Sandbox) -> RunCgroup | None:
    """The run cgroup the last run used, which the next run may keep."""
    assert sandbox.warm is not None
    return sandbox.warm._spent


def test_runs_keep_one_cgroup_and_each_reports_only_its_own_numbers(shared: Sandbox) -> None:
    # The first run leaves a 3 MB file in /box (tmpfs: it stays charged to the run cgroup) and peaks at 40+ MiB.
    first = run(shared, "head -c 3000000 /dev/zero > /box/left && python3 -c 'x = bytearray(40 << 20)'")
    cgroup = kept(shared)
    assert REUSE_MAX_LEFT_BYTES > 3_000_000
    second = run(shared, "true")
    assert kept(shared) is cgroup  # the same cgroup served both
    assert first.outcome == "ok" and first.memory_kib >= 40 * 1024, first
    assert second.outcome == "ok" and second.memory_kib < 2048, second  # not the file, nor the first run's peak
    assert second.cpu_time_s < first.cpu_time_s


def test_an_oom_kill_stays_with_the_run_that_had_it(shared: Sandbox) -> None:
    # No RLIMIT_AS (it would make this a MemoryError): 200 MiB written, the cgroup's OOM killer ends it.
    hog = run(shared, """python3 -c 'x = b"x" * (200 << 20)'""", address_space=False)
    assert hog.outcome == "memory_limit", hog
    cgroup = kept(shared)
    after = run(shared, "true")
    assert kept(shared) is cgroup and after.outcome == "ok", after


def test_a_cgroup_left_holding_much_is_not_kept(shared: Sandbox) -> None:
    """20 MB left in /box would count against the next run's 64 MiB: that run gets a new cgroup, and its
    50 MiB fit."""
    run(shared, "head -c 20000000 /dev/zero > /box/big")
    cgroup = kept(shared)
    after = run(shared, "python3 -c 'x = bytearray(50 << 20)'")
    assert kept(shared) is not cgroup and after.outcome == "ok", after


def test_other_limits_get_a_new_cgroup(shared: Sandbox) -> None:
    run(shared, "true")
    cgroup = kept(shared)
    run(shared, "true", memory_kib=128 * 1024)
    assert kept(shared) is not cgroup
