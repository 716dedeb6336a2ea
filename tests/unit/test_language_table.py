"""The README's language table is generated from the TOML files and must be current."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_language_table_is_up_to_date() -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "language_table.py"), "--check"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
