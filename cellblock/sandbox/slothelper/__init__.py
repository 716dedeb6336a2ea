"""Build the static `cellblock-slot` helper (a warm slot's init) from its C source, once per source version.

Same scheme as the launcher: the binary lands in the data dir as ``cellblock-slot-<hash>``, so a running
worker never executes a half-written or stale helper, and several workers may build it at once.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cellblock.sandbox.launcher import build_static

SOURCE_NAME = "cellblock-slot.c"


def source_text() -> bytes:
    return resources.files(__package__).joinpath(SOURCE_NAME).read_bytes()


def build_slot_helper(directory: Path, extra_flags: tuple[str, ...] = ()) -> Path:
    return build_static(source_text(), "cellblock-slot", directory, "the warm slot helper", extra_flags)
