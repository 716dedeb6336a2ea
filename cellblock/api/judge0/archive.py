"""Judge0's `additional_files`: a base64 zip unpacked by the API into the job's files, never by a shell.

Judge0 runs ``unzip -n`` inside its sandbox; we read the archive in the API process instead, so nothing of it
ever touches a disk outside a job's /box. Refused (Judge0's 422 shape, field ``additional_files``): bad base64,
not a zip, encrypted members, absolute paths, ``..``, links, and archives over the file-count or size cap.
Sizes are counted on the bytes actually read (a zip can lie about them), so a bomb stops at the cap.
A member with the main file's name is skipped: ``unzip -n`` never overwrites the source either.
"""

from __future__ import annotations

import base64
import binascii
import io
import stat
import zipfile

from cellblock.errors import ValidationFailed
from cellblock.files import validate_relative_path

FIELD = "additional_files"
READ_CHUNK = 64 * 1024


class BadArchive(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def decode_base64(text: str) -> bytes:
    """Strict base64 that tolerates what Ruby's encoders emit: line breaks and missing padding."""
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadArchive("is not valid base64") from exc


def _read_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    out = bytearray()
    with archive.open(info) as member:
        while chunk := member.read(READ_CHUNK):
            out += chunk
            if len(out) > budget:
                raise BadArchive("is larger than the server's extract limit when unpacked")
    return bytes(out)


def unpack(encoded: str, *, max_bytes: int, max_files: int, skip: str) -> list[tuple[str, bytes]]:
    """(path, content) of every regular file in the zip, in archive order; BadArchive says what is wrong."""
    data = decode_base64(encoded)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise BadArchive("is not a zip archive") from exc
    files: list[tuple[str, bytes]] = []
    budget = max_bytes
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise BadArchive(f"contains a symbolic link ({info.filename!r})")
            if info.flag_bits & 0x1:
                raise BadArchive(f"contains an encrypted file ({info.filename!r})")
            try:
                validate_relative_path(info.filename, FIELD)
            except ValidationFailed as exc:
                raise BadArchive(f"has an unsafe path: {exc.message}") from exc
            if info.filename == skip:
                continue
            if len(files) >= max_files:
                raise BadArchive(f"has more than {max_files} files")
            try:
                content = _read_capped(archive, info, budget)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
                raise BadArchive(f"cannot be read ({info.filename!r}: {type(exc).__name__})") from exc
            budget -= len(content)
            files.append((info.filename, content))
    return files
