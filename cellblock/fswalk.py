"""Walk a directory a hostile program filled, without ever following a link or resolving a path on the host.

Used after a run (the program is dead), for output files and for "did a file hit the size limit".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

MAX_WALK_DEPTH = 64  # files deeper than this are not looked at
MAX_WALK_ENTRIES = 100_000


def walk_files(box: Path) -> Iterator[tuple[str, int, str]]:
    """(relative path, parent dir fd, name) of every regular file, depth first, never following a link.

    Directories are opened relative to their parent with O_NOFOLLOW, so a link can't lead outside the box;
    no path is ever resolved on the host. Depth and entry counts are bounded (the box's inode cap bounds
    them too) so a hostile tree costs a bounded walk.
    """
    root = os.open(box, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack: list[tuple[int, str]] = [(root, "")]
    seen = 0
    try:
        while stack:
            dir_fd, prefix = stack.pop()
            try:
                with os.scandir(dir_fd) as entries:
                    listed = sorted((e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False))
                                    for e in entries)  # fmt: skip
            except OSError:
                listed = []
            for name, is_dir, is_file in listed:
                seen += 1
                if seen > MAX_WALK_ENTRIES:
                    return
                if is_file:
                    yield prefix + name, dir_fd, name
                elif is_dir and prefix.count("/") < MAX_WALK_DEPTH:
                    try:
                        child = os.open(
                            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
                        )
                    except OSError:
                        continue
                    stack.append((child, prefix + name + "/"))
            if dir_fd != root:
                os.close(dir_fd)
    finally:
        for dir_fd, _ in stack:
            os.close(dir_fd)
        os.close(root)


def any_file_at_least(box: Path, size: int, modified_since_ns: int) -> bool:
    """True when a regular file written since `modified_since_ns` has reached `size` bytes (RLIMIT_FSIZE hit).

    Files of earlier steps (a compiled binary bigger than the run's file-size limit) don't count."""
    for _, dir_fd, name in walk_files(box):
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if info.st_size >= size and info.st_mtime_ns >= modified_since_ns:
                return True
        except OSError:
            continue
    return False
