"""Files in and out of /box: name validation, writing a job's files, collecting output files safely.

Collection never follows a link: a program may leave ``out.txt -> /etc/shadow`` or a linked directory behind,
so every match must resolve inside the box and be a regular file, and is opened with O_NOFOLLOW. No program
runs while we collect (the run's cgroup is empty), so nothing can swap a path between check and open.
"""

from __future__ import annotations

import base64
import binascii
import glob
import os
import stat
from pathlib import Path, PurePosixPath

from cellblock.errors import ValidationFailed
from cellblock.models import OutputFile, SourceFile

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024


def validate_relative_path(name: str, field: str, *, allow_glob: bool = False) -> None:
    """A path relative to /box: no absolute path, no '..', no NUL, no empty or over-long part."""
    problem = None
    if not name or "\x00" in name:
        problem = "must be a non-empty path without NUL bytes"
    elif name.startswith("/"):
        problem = "must be relative to /box, not absolute"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        problem = f"is longer than {MAX_PATH_BYTES} bytes"
    else:
        parts = PurePosixPath(name).parts
        if any(p == ".." for p in parts) or name.rsplit("/", 1)[-1] in ("", "."):
            problem = "may not contain '..' or end in '/' or '.'"
        elif any(len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in parts):
            problem = f"has a part longer than {MAX_NAME_BYTES} bytes"
        elif not allow_glob and any(c in name for c in "*?["):
            problem = "may not contain glob characters"
    if problem:
        raise ValidationFailed(f"{field} {name!r} {problem}", field=field)


def decode_content(file: SourceFile, field: str) -> bytes:
    if file.encoding == "base64":
        try:
            return base64.b64decode(file.content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationFailed(f"{field} is not valid base64: {exc}", field=field) from exc
    try:
        return file.content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationFailed(f"{field} is not valid UTF-8 (send it with encoding=base64)", field=field) from exc


def write_files(box: Path, files: list[tuple[str, bytes]]) -> None:
    """Write the job's files before any untrusted code has run in this box."""
    for name, data in files:
        target = box / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


def encode_output(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 text as is, anything else as base64 — never a crash on odd bytes."""
    try:
        return data.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def _read_regular_inside(box: Path, relative: str, cap: int) -> tuple[bytes, int] | None:
    real_box = os.path.realpath(box)
    path = os.path.join(real_box, relative)
    if os.path.realpath(path) != path or not path.startswith(real_box + os.sep):
        return None  # a link somewhere on the way
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # a directory, fifo or device matched the glob
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(cap), info.st_size


def collect_outputs(box: Path, patterns: list[str], cap_bytes: int) -> list[OutputFile]:
    """Regular files matching the globs, total size capped; links and non-files are skipped."""
    out: list[OutputFile] = []
    seen: set[str] = set()
    budget = cap_bytes
    for pattern in patterns:
        for relative in sorted(glob.glob(pattern, root_dir=box, recursive=True)):
            if relative in seen:
                continue
            seen.add(relative)
            found = _read_regular_inside(box, relative, budget)
            if found is None:
                continue
            data, size = found
            budget -= len(data)
            text, encoding = encode_output(data)
            out.append(
                OutputFile(name=relative, content=text, encoding=encoding, size=size, truncated=len(data) < size)
            )
    return out
