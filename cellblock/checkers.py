"""Compare a program's stdout with the expected output. Pure functions; the custom checker is the engine's.

* ``judge0`` (default): each line right-stripped, then the whole text right-stripped (Judge0's rule).
* ``exact``: byte for byte.
* ``token``: the whitespace-separated tokens are equal.
* ``float``: tokens equal, or both numbers and within ``abs_tol`` or ``rel_tol`` of the expected one.
"""

from __future__ import annotations

import math

from cellblock.models import BuiltinChecker


def _judge0_normal(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip()


def _number(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _float_tokens_equal(expected: str, actual: str, abs_tol: float, rel_tol: float) -> str | None:
    want, got = expected.split(), actual.split()
    if len(want) != len(got):
        return f"expected {len(want)} tokens, got {len(got)}"
    for index, (w, g) in enumerate(zip(want, got, strict=True), start=1):
        if w == g:
            continue
        wn, gn = _number(w), _number(g)
        if wn is None or gn is None:
            return f"token {index}: expected {w!r}, got {g!r}"
        if abs(wn - gn) > abs_tol and abs(wn - gn) > rel_tol * abs(wn):
            return f"token {index}: expected {w}, got {g} (difference {abs(wn - gn):.3g})"
    return None


def check(checker: BuiltinChecker, expected: str, actual: str) -> tuple[bool, str | None]:
    """(accepted, message). The message says where the first difference is."""
    if checker.kind == "exact":
        ok = expected == actual
    elif checker.kind == "token":
        ok = expected.split() == actual.split()
    elif checker.kind == "float":
        problem = _float_tokens_equal(expected, actual, checker.abs_tol, checker.rel_tol)
        return problem is None, problem
    else:
        ok = _judge0_normal(expected) == _judge0_normal(actual)
    return ok, None if ok else _first_difference(expected, actual)


def _first_difference(expected: str, actual: str) -> str:
    want, got = expected.split("\n"), actual.split("\n")
    for number, (w, g) in enumerate(zip(want, got, strict=False), start=1):
        if w != g:
            return f"line {number}: expected {w[:80]!r}, got {g[:80]!r}"
    return f"expected {len(want)} lines, got {len(got)}"
