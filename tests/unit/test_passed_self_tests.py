"""`toolchains.PassedSelfTests`: what a starting worker may trust, and what it must test again."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cellblock.languages.registry import Registry
from cellblock.toolchains import PassedSelfTests, Status

PYTHON = Registry.load().get("python3")
PASSED = Status(True, "3.11.2", "ok")


def test_a_passing_self_test_is_recalled_with_its_version(tmp_path: Path) -> None:
    recent = PassedSelfTests(tmp_path / "self-tests", max_age_s=900)
    assert recent.recall(PYTHON) is None
    recent.remember(PYTHON, PASSED)
    recalled = recent.recall(PYTHON)
    assert recalled is not None and recalled.passed and recalled.version == "3.11.2"
    assert "passed on this machine" in recalled.reason
    assert [p.suffix for p in (tmp_path / "self-tests").iterdir()] == [".json"]  # no temporary file left


def test_a_failing_self_test_is_never_remembered(tmp_path: Path) -> None:
    recent = PassedSelfTests(tmp_path, max_age_s=900)
    recent.remember(PYTHON, Status(False, "3.11.2", "self-test failed: wrong_answer"))
    assert recent.recall(PYTHON) is None


def test_an_old_pass_is_tested_again(tmp_path: Path) -> None:
    recent = PassedSelfTests(tmp_path, max_age_s=60)
    recent.remember(PYTHON, PASSED)
    (path,) = tmp_path.iterdir()
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    assert recent.recall(PYTHON) is None


def test_zero_max_age_turns_it_off(tmp_path: Path) -> None:
    recent = PassedSelfTests(tmp_path, max_age_s=0)
    recent.remember(PYTHON, PASSED)
    assert recent.recall(PYTHON) is None and list(tmp_path.iterdir()) == []


def test_a_changed_language_definition_is_tested_again(tmp_path: Path) -> None:
    recent = PassedSelfTests(tmp_path, max_age_s=900)
    recent.remember(PYTHON, PASSED)
    changed = PYTHON.model_copy(update={"run": ["python3", "-I", "{source}"]})
    assert recent.recall(changed) is None


def test_a_language_that_is_not_installed_is_never_recalled(tmp_path: Path) -> None:
    recent = PassedSelfTests(tmp_path, max_age_s=900)
    absent = PYTHON.model_copy(update={"name": "absent", "run": ["cellblock-test-no-such-binary", "{source}"]})
    recent.remember(absent, PASSED)
    assert recent.recall(absent) is None and list(tmp_path.iterdir()) == []


def test_a_worker_with_other_limits_does_not_trust_the_verdict(tmp_path: Path) -> None:
    from cellblock.config import Settings
    from cellblock.workerhost import self_test_conditions

    usual = self_test_conditions(Settings())
    tight = self_test_conditions(Settings(default_compile={"memory_mib": 8, "cpu_time_s": 0.02}))
    assert usual != tight
    PassedSelfTests(tmp_path, max_age_s=900, sandbox=usual).remember(PYTHON, PASSED)
    assert PassedSelfTests(tmp_path, max_age_s=900, sandbox=usual).recall(PYTHON) is not None
    assert PassedSelfTests(tmp_path, max_age_s=900, sandbox=tight).recall(PYTHON) is None
