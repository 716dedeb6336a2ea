"""Build the static `cellblock-launch` helper from its C source, once per source version.

The binary lands in the data dir as ``cellblock-launch-<hash>``: a new source gets a new name, so a running
worker never executes a half-written or stale launcher, and several workers may build it at once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from cellblock.errors import SandboxUnavailable

SOURCE_NAME = "cellblock-launch.c"


def source_text() -> bytes:
    return resources.files(__package__).joinpath(SOURCE_NAME).read_bytes()


def build_launcher(directory: Path) -> Path:
    source = source_text()
    target = directory / f"cellblock-launch-{hashlib.sha256(source).hexdigest()[:16]}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=directory) as work:
        src = Path(work) / SOURCE_NAME
        src.write_bytes(source)
        out = Path(work) / "cellblock-launch"
        done = subprocess.run(
            ["gcc", "-O2", "-static", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(src)],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise SandboxUnavailable(f"cannot build the sandbox launcher with gcc: {done.stderr.strip()[:500]}")
        os.chmod(out, 0o755)
        os.replace(out, target)
    return target
