"""The verdict order (`cellblock.sandbox.outcome.decide`), including every tie between two causes.

Order (DESIGN): wall timer → CPU (≥ limit or SIGXCPU, exit 152) → OOM kill → output (SIGXFSZ, exit 153, or
over the cap) → signal (exit 128+n) → non-zero exit → ok.
"""

from __future__ import annotations

import itertools
import signal
from dataclasses import replace

import pytest

from cellblock.models import Outcome
from cellblock.sandbox.outcome import SIGXCPU_EXIT, SIGXFSZ_EXIT, Decision, Observation, decide, signal_name

CLEAN = Observation(
    exit_code=0, wall_timer_fired=False, cpu_time_s=0.01, cpu_limit_s=2.0, oom_kills=0, output_over_cap=False,
    killed_for_output=False,
)  # fmt: skip

ORDER = ["time_limit_wall", "time_limit_cpu", "memory_limit", "output_limit", "signaled", "runtime_error"]
# Each cause, alone, as a change to a clean Observation. At most one exit code per cause.
CAUSES: list[tuple[str, dict[str, object]]] = [
    ("time_limit_wall", {"wall_timer_fired": True}),
    ("time_limit_cpu", {"cpu_time_s": 2.5}),
    ("time_limit_cpu", {"exit_code": SIGXCPU_EXIT}),
    ("memory_limit", {"oom_kills": 1}),
    ("output_limit", {"output_over_cap": True}),
    ("output_limit", {"killed_for_output": True}),
    ("output_limit", {"exit_code": SIGXFSZ_EXIT}),
    ("signaled", {"exit_code": 128 + signal.SIGSEGV}),
    ("runtime_error", {"exit_code": 3}),
]
# Every pair of causes of different rank that can happen together (a run has only one exit code).
TIES = [
    (a, b)
    for a, b in itertools.product(CAUSES, CAUSES)
    if ORDER.index(a[0]) < ORDER.index(b[0]) and not ("exit_code" in a[1] and "exit_code" in b[1])
]


def obs(**changes: object) -> Observation:
    return replace(CLEAN, **changes)  # type: ignore[arg-type]


def test_clean_exit_is_ok() -> None:
    assert decide(CLEAN) == Decision("ok", 0, None, None)


def test_constants_are_128_plus_the_signal() -> None:
    assert SIGXCPU_EXIT == 152
    assert SIGXFSZ_EXIT == 153


def test_each_outcome_names_a_model_outcome() -> None:
    for expected, change in CAUSES:
        assert Outcome(decide(obs(**change)).outcome) == expected


@pytest.mark.parametrize(("expected", "change"), CAUSES, ids=[c[0] for c in CAUSES])
def test_each_cause_alone(expected: str, change: dict[str, object]) -> None:
    assert decide(obs(**change)).outcome == expected


@pytest.mark.parametrize(("winner", "loser"), TIES, ids=[f"{a[1]}>{b[1]}" for a, b in TIES])
def test_every_tie_is_won_by_the_earlier_cause(
    winner: tuple[str, dict[str, object]], loser: tuple[str, dict[str, object]]
) -> None:
    assert decide(obs(**loser[1], **winner[1])).outcome == winner[0]


def test_all_causes_at_once_is_wall() -> None:
    d = decide(obs(wall_timer_fired=True, cpu_time_s=9.0, oom_kills=2, output_over_cap=True,
                   killed_for_output=True, exit_code=SIGXCPU_EXIT))  # fmt: skip
    assert d == Decision("time_limit_wall", None, "SIGKILL", "wall-clock time limit exceeded")


def test_cpu_limit_is_inclusive() -> None:
    assert decide(obs(cpu_time_s=2.0)).outcome == "time_limit_cpu"
    assert decide(obs(cpu_time_s=1.999)).outcome == "ok"


def test_cpu_over_limit_beats_a_clean_exit_and_reports_no_exit_code() -> None:
    d = decide(obs(cpu_time_s=3.0, exit_code=0))
    assert d.outcome == "time_limit_cpu"
    assert d.exit_code is None
    assert d.message == "CPU time limit exceeded"


def test_exit_152_is_sigxcpu_even_below_the_cgroup_limit() -> None:
    d = decide(obs(exit_code=SIGXCPU_EXIT, cpu_time_s=0.5))
    assert d == Decision("time_limit_cpu", None, "SIGXCPU", "CPU time limit exceeded")


def test_cpu_killed_by_us_reports_sigkill() -> None:
    assert decide(obs(cpu_time_s=2.1, exit_code=137)).signal == "SIGKILL"


def test_oom() -> None:
    assert decide(obs(oom_kills=1, exit_code=137)) == Decision("memory_limit", None, "SIGKILL",
                                                                "memory limit exceeded")  # fmt: skip


def test_oom_beats_sigxfsz() -> None:
    assert decide(obs(oom_kills=1, exit_code=SIGXFSZ_EXIT)).outcome == "memory_limit"


def test_exit_153_is_sigxfsz_output_limit() -> None:
    assert decide(obs(exit_code=SIGXFSZ_EXIT)) == Decision("output_limit", None, "SIGXFSZ",
                                                            "output or file size limit exceeded")  # fmt: skip


@pytest.mark.parametrize("field", ["output_over_cap", "killed_for_output"])
def test_output_over_cap_without_a_signal(field: str) -> None:
    d = decide(obs(**{field: True}))
    assert d == Decision("output_limit", None, None, "output or file size limit exceeded")


def test_output_beats_a_signal_and_an_exit_code() -> None:
    assert decide(obs(killed_for_output=True, exit_code=137)).outcome == "output_limit"
    assert decide(obs(output_over_cap=True, exit_code=2)).outcome == "output_limit"


@pytest.mark.parametrize(
    ("code", "name"), [(128 + signal.SIGSEGV, "SIGSEGV"), (128 + signal.SIGABRT, "SIGABRT"), (137, "SIGKILL"),
                       (128 + signal.SIGFPE, "SIGFPE"), (128 + signal.SIGPIPE, "SIGPIPE")],
)  # fmt: skip
def test_signal_death(code: int, name: str) -> None:
    assert decide(obs(exit_code=code)) == Decision("signaled", None, name, f"killed by {name}")


@pytest.mark.parametrize("code", [1, 2, 42, 127])
def test_non_zero_exit(code: int) -> None:
    assert decide(obs(exit_code=code)) == Decision("runtime_error", code, None, f"exited with code {code}")


@pytest.mark.parametrize("code", [128, 255, 200])
def test_exit_codes_that_cannot_be_a_signal_are_runtime_errors(code: int) -> None:
    # 128 is "signal 0" and 193..255 are above SIGRTMAX (64): no signal kills a process with those, so they
    # are the program's own exit status. `return -1;` from C's main exits 255 and must read as exit code 255.
    assert decide(obs(exit_code=code)) == Decision("runtime_error", code, None, f"exited with code {code}")


def test_signal_name_for_unknown_numbers() -> None:
    assert signal_name(signal.SIGTERM) == "SIGTERM"
    assert signal_name(99) == "SIG99"


def test_bwrap_itself_killed_by_a_signal_is_signaled() -> None:
    from cellblock.sandbox.outcome import Observation, decide

    obs = Observation(exit_code=-9, wall_timer_fired=False, cpu_time_s=0.0, cpu_limit_s=1.0, oom_kills=0,
                      output_over_cap=False, killed_for_output=False)  # fmt: skip
    decision = decide(obs)
    assert (decision.outcome, decision.signal, decision.exit_code) == ("signaled", "SIGKILL", None)
