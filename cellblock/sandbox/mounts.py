"""mount(2)/umount2(2) through libc: a size- and inode-capped tmpfs per job at the slot's /box.

A tmpfs bounds what a program can write (bytes and file count) and vanishes whole on unmount, which is
both the cheapest wipe and one that cannot be fooled by odd file names, symlinks or permissions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from cellblock.errors import SandboxFailure

MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount_tmpfs(target: Path, size_bytes: int, inodes: int, uid: int, gid: int) -> None:
    options = f"size={size_bytes},nr_inodes={inodes},mode=0755,uid={uid},gid={gid}".encode()
    rc = _libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options)
    if rc != 0:
        err = ctypes.get_errno()
        raise SandboxFailure(f"cannot mount tmpfs at {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise SandboxFailure(f"cannot unmount {target}: {os.strerror(err)}")


def is_mount(target: Path) -> bool:
    return os.path.ismount(target)
