"""Build the static `cellblock-slot` helper (a warm slot's init) from its C source, once per source version.

Same scheme as the launcher: the binary lands in the data dir as ``cellblock-slot-<hash>``, so a running
worker never executes a half-written or stale helper, and several workers may build it at once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from cellblock.errors import SandboxUnavailable

SOURCE_NAME = "cellblock-slot.c"


def source_text() -> bytes:
    return resources.files(__package__).joinpath(SOURCE_NAME).read_bytes()


def build_slot_helper(directory: Path, extra_flags: tuple[str, ...] = ()) -> Path:
    source = source_text()
    digest = hashlib.sha256(source + " ".join(extra_flags).encode()).hexdigest()[:16]
    target = directory / f"cellblock-slot-{digest}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=directory) as work:
        src = Path(work) / SOURCE_NAME
        src.write_bytes(source)
        out = Path(work) / "cellblock-slot"
        done = subprocess.run(
            ["gcc", "-O2", "-static", "-Wall", "-Wextra", "-Werror", *extra_flags, "-o", str(out), str(src)],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise SandboxUnavailable(f"cannot build the warm slot helper with gcc: {done.stderr.strip()[:500]}")
        os.chmod(out, 0o755)
        os.replace(out, target)
    return target
