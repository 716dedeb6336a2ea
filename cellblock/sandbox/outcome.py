"""Decide what happened to a run from our own observations, in DESIGN's fixed order.

bubblewrap reports a signal death of the program as exit code 128+sig, which cannot be told apart from
``exit(137)``. So the order matters and every item comes from data we own (timer, cgroup counters, file sizes):

1. our wall timer fired                        → time_limit_wall
2. cgroup CPU ≥ limit, or SIGXCPU (exit 152)   → time_limit_cpu
3. the memory cgroup's oom_kill counter > 0    → memory_limit
4. SIGXFSZ (exit 153) or output over the cap   → output_limit
5. any other exit in 129…128+SIGRTMAX          → signaled (signal name)
6. non-zero exit                               → runtime_error
7. otherwise                                   → ok

A program can only fool step 5/6 into a wrong signal name about itself; it never affects the host.
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass

SIGXCPU_EXIT = 128 + _signal.SIGXCPU
SIGXFSZ_EXIT = 128 + _signal.SIGXFSZ
# bwrap reports a signal death as 128 + signal number; 128 itself and codes above 128 + SIGRTMAX can only be
# plain exit codes (a C `return -1` exits 255).
SIGNAL_EXIT_MIN = 129
SIGNAL_EXIT_MAX = 128 + _signal.SIGRTMAX


@dataclass(frozen=True)
class Observation:
    exit_code: int
    wall_timer_fired: bool
    cpu_time_s: float
    cpu_limit_s: float
    oom_kills: int
    output_over_cap: bool
    killed_for_output: bool


@dataclass(frozen=True)
class Decision:
    outcome: str
    exit_code: int | None
    signal: str | None
    message: str | None


def signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def decide(obs: Observation) -> Decision:  # noqa: PLR0911 - one return per rung of the ladder
    code = obs.exit_code
    if obs.wall_timer_fired:
        return Decision("time_limit_wall", None, "SIGKILL", "wall-clock time limit exceeded")
    if obs.cpu_time_s >= obs.cpu_limit_s or code == SIGXCPU_EXIT:
        return Decision(
            "time_limit_cpu", None, "SIGKILL" if code != SIGXCPU_EXIT else "SIGXCPU", "CPU time limit exceeded"
        )
    if obs.oom_kills > 0:
        return Decision("memory_limit", None, "SIGKILL", "memory limit exceeded")
    if code == SIGXFSZ_EXIT or obs.output_over_cap or obs.killed_for_output:
        return Decision(
            "output_limit", None, "SIGXFSZ" if code == SIGXFSZ_EXIT else None, "output or file size limit exceeded"
        )
    if code < 0:  # bwrap itself was killed by a signal (Popen reports -N)
        name = signal_name(-code)
        return Decision("signaled", None, name, f"killed by {name}")
    if SIGNAL_EXIT_MIN <= code <= SIGNAL_EXIT_MAX:
        name = signal_name(code - 128)
        return Decision("signaled", None, name, f"killed by {name}")
    if code != 0:
        return Decision("runtime_error", code, None, f"exited with code {code}")
    return Decision("ok", 0, None, None)
