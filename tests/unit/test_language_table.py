"""The README's language table is generated from the TOML files and must be current."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_language_table_is_up_to_date() -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "language_table.py"), "--check"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_every_language_has_its_cold_start_measured() -> None:
    import json

    from cellblock.languages.registry import Registry

    measured = json.loads((REPO / "bench" / "results" / "languages.json").read_text())["languages"]
    missing = sorted(lang.name for lang in Registry.load().languages if lang.name not in measured)
    assert not missing, (
        f"run: sudo .venv/bin/python bench/language_cold_start.py --write --languages {','.join(missing)}"
    )
    assert all(row["sandbox_ms"] > 0 and row["bare_ms"] > 0 and row["version"] for row in measured.values())
