"""Files in and out of /box: name validation, writing a job's files, collecting output files safely.

Collection never follows a link: a program may leave ``out.txt -> /etc/shadow``, ``root -> /``, a link loop
or a 1500-deep tree behind. So we walk the box ourselves, directory fd by directory fd with O_NOFOLLOW,
match relative paths as strings, open only regular files, and bound the walk. No program runs while we
collect (the run's cgroup is empty), so nothing can swap a path between check and open.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from pathlib import Path, PurePosixPath

from cellblock.errors import ValidationFailed
from cellblock.fswalk import walk_files
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


def _translate_name(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        char = part[i]
        close = part.find("]", i + 2) if char == "[" else -1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif close != -1:
            body = part[i + 1 : close]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = close
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A glob over relative paths: `*`, `?` and `[...]` stay within one name; a `**` part spans any number
    of directories (zero included). Matching is on strings: no file system access, so no link is followed."""
    parts = pattern.split("/")
    regex = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex.append(".*" if last else "(?:[^/]+/)*")
        else:
            regex.append(_translate_name(part) + ("" if last else "/"))
    return re.compile("".join(regex) + r"\Z", re.DOTALL)


def _read_regular(dir_fd: int, name: str, cap: int) -> tuple[bytes, int] | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        return handle.read(cap), info.st_size


def collect_outputs(box: Path, patterns: list[str], cap_bytes: int) -> list[OutputFile]:
    """Regular files whose path matches one of the globs, total size capped; links are never followed."""
    if not patterns:
        return []
    matchers = [glob_to_regex(p) for p in patterns]
    out: list[OutputFile] = []
    budget = cap_bytes
    for relative, dir_fd, name in walk_files(box):
        if not any(m.match(relative) for m in matchers):
            continue
        found = _read_regular(dir_fd, name, budget)
        if found is None:
            continue
        data, size = found
        budget -= len(data)
        text, encoding = encode_output(data)
        out.append(OutputFile(name=relative, content=text, encoding=encoding, size=size, truncated=len(data) < size))
    return sorted(out, key=lambda f: f.name)
