"""Shared fixtures: the real sandbox host, the language registry and the engine.

Sandbox tests run the real thing (root, bubblewrap, cgroups). Each test session gets its own data dir;
slots are allocated machine-wide with flocks, so parallel pytest workers never share one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellblock.config import Settings
from cellblock.engine import Engine
from cellblock.languages.registry import Registry
from cellblock.models import JobResult, JobSpec
from cellblock.sandbox.host import SandboxHost

REPO = Path(__file__).resolve().parent.parent


def conformance_dir() -> Path:
    """The shared corpus (never copied into this repo); CELLBLOCK_CONFORMANCE_DIR overrides it."""
    return Path(os.environ.get("CELLBLOCK_CONFORMANCE_DIR", REPO.parent / "shared" / "conformance"))


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cellblock-test-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.load()


@pytest.fixture(scope="session")
def host(settings: Settings) -> SandboxHost:
    return SandboxHost(settings)


@pytest.fixture(scope="session")
def engine(settings: Settings, registry: Registry, host: SandboxHost) -> Engine:
    return Engine(settings, registry, host)


@pytest.fixture(autouse=True)
def warm_slots_given_back(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under a warm setting a session host keeps its idle warm slots (a mounted /box, a live sandbox, the slot's
    lock) between jobs: give them back after every test that used one, so that no other test's "nothing left
    behind" check, here or in another xdist worker, takes them for leftovers. A no-op under isolation=fresh."""
    yield
    used = getattr(request.node, "funcargs", {}).get("host")  # a test's own parameter may be called "host" too
    if isinstance(used, SandboxHost):
        used.close_warm()


@pytest.fixture
def run_job(engine: Engine) -> Any:
    """run_job(language, source, **JobSpec fields) -> JobResult, through the real sandbox."""

    def run(language: str, source: str, **fields: Any) -> JobResult:
        spec = JobSpec.model_validate({"language": language, "files": [{"name": "main", "content": source}], **fields})
        return engine.run(spec)

    return run
