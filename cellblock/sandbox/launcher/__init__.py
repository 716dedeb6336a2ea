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


def build_static(source: bytes, name: str, directory: Path, what: str, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile `source` with gcc into a static `directory/<name>-<digest>` once (the digest covers the flags)."""
    digest = hashlib.sha256(source + " ".join(extra_flags).encode()).hexdigest()[:16]
    target = directory / f"{name}-{digest}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=directory) as work:
        src = Path(work) / f"{name}.c"
        src.write_bytes(source)
        out = Path(work) / name
        done = subprocess.run(
            ["gcc", "-O2", "-static", "-Wall", "-Wextra", "-Werror", *extra_flags, "-o", str(out), str(src)],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise SandboxUnavailable(f"cannot build {what} with gcc: {done.stderr.strip()[:500]}")
        os.chmod(out, 0o755)
        os.replace(out, target)
    return target


def build_launcher(directory: Path) -> Path:
    return build_static(source_text(), "cellblock-launch", directory, "the sandbox launcher")
