"""The web UI's own JavaScript checks, run by the suite: its unit tests (`node --test`: event-stream parsing,
/metrics totals, where an error's field is shown) and its formatting (prettier, 120 columns), like ruff for Python."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "cellblock" / "web"

pytestmark = pytest.mark.skipif(
    shutil.which("npm") is None or not (WEB / "node_modules").is_dir(), reason="needs npm and `npm ci` (scripts/setup)"
)


@pytest.mark.parametrize("script", ["test", "check"])
def test_npm_script_passes(script: str) -> None:
    done = subprocess.run(["npm", "run", "--silent", script], cwd=WEB, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
