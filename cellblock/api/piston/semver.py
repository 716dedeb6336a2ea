"""Piston's `version` field: an npm-style SemVer selector matched against a toolchain's real version.

Piston resolves ``{language, version}`` with ``semver.satisfies(runtime.version, version)`` and takes the
highest match. We support the selectors its clients send: ``*`` / ``x`` / empty (any), x-ranges (``3``,
``3.x``, ``3.11.*``), exact versions (``3.11.2``, ``=3.11.2``, ``v3.11.2``), comparators (``>=3.10 <4``), caret
and tilde ranges (``^3.8``, ``~3.11.0``), hyphen ranges (``3.9 - 3.12``) and ``||`` alternatives. A selector
we cannot parse matches nothing (Piston answers "runtime is unknown" for it too). Pre-release tags are
ignored: our toolchain versions have none.
"""

from __future__ import annotations

import re

Version = tuple[int, int, int]
_PART = r"(?:0|[1-9]\d*|[xX*])"
_PARTIAL = re.compile(rf"^v?({_PART})(?:\.({_PART}))?(?:\.({_PART}))?(?:[-+][0-9A-Za-z.-]*)?$")
_COMPARATOR = re.compile(r"^(<=|>=|<|>|=|\^|~>?)?\s*(.+)$")
_WILDCARDS = ("x", "X", "*")
INF = 1 << 62  # an upper bound above every real version part


def parse_version(text: str) -> Version | None:
    """'3.11.2' → (3, 11, 2); missing parts are 0; None when it is not a version."""
    match = _PARTIAL.match(text.strip())
    if not match or any(p in _WILDCARDS for p in match.groups() if p):
        return None
    major, minor, patch = (int(p) if p else 0 for p in match.groups())
    return major, minor, patch


def _partial(text: str) -> list[int] | None:
    """The fixed leading parts of a possibly partial version: '3.x' → [3], '*' → [], '3.11.2' → [3, 11, 2]."""
    if text in _WILDCARDS or text == "":
        return []
    match = _PARTIAL.match(text)
    if not match:
        return None
    fixed: list[int] = []
    for part in match.groups():
        if part is None or part in _WILDCARDS:
            break
        fixed.append(int(part))
    return fixed


def _bounds(fixed: list[int]) -> tuple[Version, Version]:
    """[low, high) of an x-range: [3] → [3.0.0, 4.0.0); [3, 11] → [3.11.0, 3.12.0); [] → everything."""
    if not fixed:
        return (0, 0, 0), (INF, 0, 0)
    low = [*fixed, 0, 0, 0][:3]
    high = list(low)
    if len(fixed) < 3:
        high[len(fixed) - 1] += 1
        high[len(fixed) :] = [0] * (3 - len(fixed))
    else:
        high[2] += 1
    return (low[0], low[1], low[2]), (high[0], high[1], high[2])


def _caret_high(fixed: list[int]) -> Version:
    """^1.2.3 → <2.0.0; ^0.2.3 → <0.3.0; ^0.0.3 → <0.0.4 (npm: the first non-zero part is fixed)."""
    padded = [*fixed, 0, 0, 0][:3]
    for index, part in enumerate(padded):
        if part != 0 or index == len(fixed) - 1 or index == 2:
            high = padded[:index] + [part + 1] + [0] * (2 - index)
            return high[0], high[1], high[2]
    return INF, 0, 0


def _comparator(token: str, version: Version) -> bool:
    match = _COMPARATOR.match(token)
    if not match:
        return False
    op, rest = match.group(1) or "", match.group(2)
    fixed = _partial(rest)
    if fixed is None:
        return False
    low, high = _bounds(fixed)
    if op == "^":
        high = _caret_high(fixed)
    elif op.startswith("~"):  # patch-level changes if a minor is given, else minor-level
        high = _bounds(fixed[:2])[1]
    tests = {
        "": low <= version < high, "=": low <= version < high, "^": low <= version < high,
        "~": low <= version < high, "~>": low <= version < high,
        ">=": version >= low, ">": version >= high, "<": version < low, "<=": version < high,
    }  # fmt: skip
    return tests[op]


def _join_operators(selector: str) -> list[str]:
    """'>= 3.10  < 4' → ['>=3.10', '<4']: npm allows a space between an operator and its version."""
    return re.sub(r"(<=|>=|<|>|=|\^|~>?)\s+", r"\1", selector).split()


def _satisfies_set(selector: str, version: Version) -> bool:
    hyphen = re.match(r"^\s*(\S+)\s+-\s+(\S+)\s*$", selector)
    if hyphen:
        return _comparator(">=" + hyphen.group(1), version) and _comparator("<=" + hyphen.group(2), version)
    tokens = _join_operators(selector)
    return all(_comparator(token, version) for token in tokens) if tokens else True


def satisfies(version: str, selector: str) -> bool:
    """True when the real `version` is inside the npm-style `selector`."""
    parsed = parse_version(version)
    if parsed is None:
        return selector.strip() in ("*", "x", "X", "", version)
    return any(_satisfies_set(part, parsed) for part in selector.split("||"))
