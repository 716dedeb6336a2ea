"""The /etc a program sees: generated identity files plus copies of the few host entries runtimes need.

Prepared once per content in ``<data>/shared/etc-<hash>`` (written to a temp dir, then renamed, so several
workers may prepare it at once and a run never sees half of it). bwrap binds it read-only and links
/etc/<name> to it. The loader cache and alternatives are copied from the host at start, so a language
installed later is seen by workers started after it (as with any toolchain change).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from cellblock.sandbox.bwrap import BOX_GID, BOX_UID

HOST_FILES = ("/etc/ld.so.cache", "/etc/localtime")
HOST_ALTERNATIVES = Path("/etc/alternatives")


def generated_files() -> dict[str, bytes]:
    """One user, one group, loopback only."""
    return {
        "passwd": (
            f"runner:x:{BOX_UID}:{BOX_GID}:runner:/box:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        ).encode(),
        "group": f"runner:x:{BOX_GID}:\nnogroup:x:65534:\n".encode(),
        "hosts": b"127.0.0.1 localhost box\n::1 localhost\n",
        "nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files dns\n",
    }


def _alternatives() -> dict[str, str]:
    if not HOST_ALTERNATIVES.is_dir():
        return {}
    return {entry.name: os.readlink(entry) for entry in HOST_ALTERNATIVES.iterdir() if entry.is_symlink()}


def prepare_etc(shared: Path) -> Path:
    files = generated_files()
    for host_path in HOST_FILES:
        if os.path.exists(host_path):
            files[os.path.basename(host_path)] = Path(host_path).read_bytes()
    links = _alternatives()
    digest = hashlib.sha256(repr((sorted(files.items()), sorted(links.items()))).encode()).hexdigest()[:16]
    target = shared / f"etc-{digest}"
    if target.is_dir():
        return target
    work = Path(tempfile.mkdtemp(dir=shared, prefix=".etc-"))
    for name, data in files.items():
        (work / name).write_bytes(data)
        os.chmod(work / name, 0o644)
    (work / "alternatives").mkdir()
    for name, link in links.items():
        os.symlink(link, work / "alternatives" / name)
    os.chmod(work, 0o755)
    try:
        os.rename(work, target)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
        if not target.is_dir():  # not "another worker prepared the same content first": a real failure
            raise
    return target
