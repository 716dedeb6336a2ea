"""Output checkers (`cellblock.checkers.check`): Judge0's rule, exact, token and float, with their messages."""

from __future__ import annotations

import pytest

from cellblock.checkers import check
from cellblock.models import BuiltinChecker

JUDGE0 = BuiltinChecker()
EXACT = BuiltinChecker(kind="exact")
TOKEN = BuiltinChecker(kind="token")
FLOAT = BuiltinChecker(kind="float")


def test_default_checker_is_judge0() -> None:
    assert JUDGE0.kind == "judge0"


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("3\n", "3\n"),
        ("3\n", "3"),  # final newline
        ("3", "3\n\n\n"),  # trailing blank lines
        ("a b\nc\n", "a b   \nc\t\n"),  # trailing spaces and tabs per line
        ("1\n2\n", "1\r\n2\r\n"),  # CRLF: \r is trailing whitespace
        ("", ""),
        ("", "\n  \n"),
    ],
)
def test_judge0_accepts_trailing_whitespace(expected: str, actual: str) -> None:
    assert check(JUDGE0, expected, actual) == (True, None)


@pytest.mark.parametrize(
    ("expected", "actual", "message"),
    [
        ("3\n", " 3\n", "line 1: expected '3', got ' 3'"),  # leading whitespace counts
        ("a b\n", "a  b\n", "line 1: expected 'a b', got 'a  b'"),  # inner whitespace counts
        ("1\n2\n", "1\n\n2\n", "line 2: expected '2', got ''"),  # an inner blank line counts
        ("1\n2\n3\n", "1\n2\n4\n", "line 3: expected '3', got '4'"),
        ("yes", "Yes", "line 1: expected 'yes', got 'Yes'"),  # case counts
        ("1\n2", "1", "expected 2 lines, got 1"),
        ("", "x", "line 1: expected '', got 'x'"),
    ],
)
def test_judge0_rejects_with_the_first_difference(expected: str, actual: str, message: str) -> None:
    assert check(JUDGE0, expected, actual) == (False, message)


def test_message_cuts_long_lines() -> None:
    ok, message = check(JUDGE0, "a" * 500, "b" * 500)
    assert not ok
    assert message == f"line 1: expected {'a' * 80!r}, got {'b' * 80!r}"


def test_exact_is_byte_for_byte() -> None:
    assert check(EXACT, "3\n", "3\n") == (True, None)
    assert check(EXACT, "3\n", "3") == (False, "expected 2 lines, got 1")
    assert check(EXACT, "3\n", "3 \n") == (False, "line 1: expected '3', got '3 '")
    assert check(EXACT, "1\n2\n", "1\r\n2\r\n") == (False, "line 1: expected '1', got '1\\r'")


def test_token_ignores_all_whitespace_layout() -> None:
    assert check(TOKEN, "1 2 3\n", "1\n2\t\t3") == (True, None)
    assert check(TOKEN, "  a\n\nb  ", "a b") == (True, None)
    ok, message = check(TOKEN, "1 2 3", "1 2 3 4")
    assert not ok and message == "line 1: expected '1 2 3', got '1 2 3 4'"
    assert check(TOKEN, "1 2", "2 1")[0] is False
    assert check(TOKEN, "1.0", "1")[0] is False  # tokens are compared as text


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("1", "1"),
        ("0.5", "0.5000009"),  # within abs 1e-6
        ("1e9", "1000000900"),  # within rel 1e-6 (1000), far outside abs
        ("3.14159 2.71828\n", "3.1415905\n2.7182805"),  # layout does not matter
        ("1 x 2", "1.0000001 x 2"),  # a non-number token is compared exactly
        ("-0.0", "0"),
        ("nan", "nan"),  # identical text is equal even when not a finite number
    ],
)
def test_float_accepts_within_tolerance(expected: str, actual: str) -> None:
    assert check(FLOAT, expected, actual) == (True, None)


@pytest.mark.parametrize(
    ("expected", "actual", "message"),
    [
        ("1", "1.1", "token 1: expected 1, got 1.1 (difference 0.1)"),
        ("0.5 0.5", "0.5 0.50001", "token 2: expected 0.5, got 0.50001 (difference 1e-05)"),
        ("1e9", "1000002000", "token 1: expected 1e9, got 1000002000 (difference 2e+03)"),
        ("1 2", "1", "expected 2 tokens, got 1"),
        ("abc", "abd", "token 1: expected 'abc', got 'abd'"),
        ("1", "one", "token 1: expected '1', got 'one'"),
        ("1", "nan", "token 1: expected '1', got 'nan'"),  # NaN is not a number within tolerance of 1
        ("1", "inf", "token 1: expected '1', got 'inf'"),
    ],
)
def test_float_rejects_with_a_message(expected: str, actual: str, message: str) -> None:
    assert check(FLOAT, expected, actual) == (False, message)


def test_float_absolute_tolerance_alone() -> None:
    checker = BuiltinChecker(kind="float", abs_tol=0.5, rel_tol=0)
    assert check(checker, "10", "10.4")[0] is True
    assert check(checker, "10", "9.6")[0] is True
    assert check(checker, "10", "10.6")[0] is False
    assert check(checker, "1000000", "1000000.6")[0] is False  # no relative slack


def test_float_relative_tolerance_alone() -> None:
    checker = BuiltinChecker(kind="float", abs_tol=0, rel_tol=0.01)
    assert check(checker, "1000", "1009")[0] is True
    assert check(checker, "1000", "1011")[0] is False
    assert check(checker, "0.001", "0.001005")[0] is True
    assert check(checker, "0.001", "0.0011")[0] is False
    assert check(checker, "0", "1e-300")[0] is False  # relative to an expected 0 nothing is close


def test_float_zero_tolerance_is_exact_on_numbers() -> None:
    checker = BuiltinChecker(kind="float", abs_tol=0, rel_tol=0)
    assert check(checker, "0.1", "0.10")[0] is True  # same number, different text
    assert check(checker, "0.1", "0.1000000001")[0] is False
