"""Settings (`cellblock.config`): safe defaults, CELLBLOCK_* environment, fail fast on inconsistent limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from cellblock.config import DEFAULT_COMPILE, DEFAULT_RUN, MAX_COMPILE, MAX_RUN, LimitBounds, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CELLBLOCK_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(("default", "maximum"), [(DEFAULT_RUN, MAX_RUN), (DEFAULT_COMPILE, MAX_COMPILE)])
def test_defaults_are_within_maxima(default: LimitBounds, maximum: LimitBounds) -> None:
    for name, value in default.model_dump().items():
        assert 0 < value <= getattr(maximum, name), name


def test_default_settings() -> None:
    settings = Settings()
    assert settings.default_run == DEFAULT_RUN
    assert settings.max_run == MAX_RUN
    assert settings.default_compile == DEFAULT_COMPILE
    assert settings.max_compile == MAX_COMPILE
    assert settings.data_dir == Path("/var/lib/cellblock")
    assert settings.allow_network is False  # network is opt-in for the server
    assert settings.first_uid >= 1000  # slot uids are never system users
    assert settings.slot_count() == max(1, os.cpu_count() or 1)


def test_env_overrides_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CELLBLOCK_DATA_DIR", str(tmp_path / "data"))
    assert Settings().data_dir == tmp_path / "data"


def test_env_overrides_scalars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLBLOCK_ALLOW_NETWORK", "true")
    monkeypatch.setenv("CELLBLOCK_MAX_TESTS", "7")
    monkeypatch.setenv("CELLBLOCK_POLL_INTERVAL_S", "0.02")
    settings = Settings()
    assert settings.allow_network is True
    assert settings.max_tests == 7
    assert settings.poll_interval_s == 0.02


def test_env_without_prefix_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", "/nope")
    assert Settings().data_dir == Path("/var/lib/cellblock")


def test_env_overrides_a_whole_limit_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLBLOCK_MAX_RUN", MAX_RUN.model_copy(update={"cpu_time_s": 30.0}).model_dump_json())
    assert Settings().max_run.cpu_time_s == 30.0


def test_env_overrides_one_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # An operator lowers one maximum; the others keep their defaults.
    monkeypatch.setenv("CELLBLOCK_MAX_RUN__CPU_TIME_S", "30")
    settings = Settings()
    assert settings.max_run.cpu_time_s == 30.0
    assert settings.max_run.memory_mib == MAX_RUN.memory_mib


@pytest.mark.parametrize("name", list(LimitBounds.model_fields))
def test_a_default_above_its_maximum_fails(name: str) -> None:
    bad = DEFAULT_RUN.model_copy(update={name: getattr(MAX_RUN, name) * 2})
    with pytest.raises(ValidationError, match=rf"default_run\.{name}=.* is above its maximum"):
        Settings(default_run=bad)


def test_a_maximum_below_its_default_fails() -> None:
    low = MAX_COMPILE.model_copy(update={"memory_mib": DEFAULT_COMPILE.memory_mib - 1})
    with pytest.raises(ValidationError, match=r"default_compile\.memory_mib"):
        Settings(max_compile=low)


def test_a_default_above_its_maximum_from_env_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLBLOCK_DEFAULT_RUN", DEFAULT_RUN.model_copy(update={"cpu_time_s": 99.0}).model_dump_json())
    with pytest.raises(ValidationError, match=r"default_run\.cpu_time_s=99\.0 is above its maximum 60\.0"):
        Settings()


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_slots", 0), ("first_uid", 0), ("poll_interval_s", 0), ("poll_interval_s", 2), ("box_size_mib", 1),
     ("tmp_size_mib", 0), ("max_tests", 0), ("box_inodes", 10)],
)  # fmt: skip
def test_out_of_range_settings_fail(key: str, value: float) -> None:
    with pytest.raises(ValidationError, match=key):
        Settings.model_validate({key: value})


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.allow_network = True  # type: ignore[misc]
