"""Run a command on a host where some files do not exist: `python -m tests.cluster.hide PATH… -- argv…`.

Makes a toolchain genuinely absent for one process tree: each PATH (e.g. ruby's real binary) gets /dev/null
bind-mounted over it, so running it fails (a device cannot be executed), for the command and for every
sandbox it starts (bwrap binds /usr recursively, this mount included). Then it execs argv.

It must already run in a mount namespace of its own (start it under `unshare --mount --propagation private`):
it refuses to mount anything in its parent's mount namespace, so a mistake cannot break the host.
"""

from __future__ import annotations

import os
import subprocess
import sys


def main(args: list[str]) -> None:
    if "--" not in args:
        sys.exit("usage: python -m tests.cluster.hide PATH... -- argv...")
    split = args.index("--")
    paths, argv = args[:split], args[split + 1 :]
    if not paths or not argv:
        sys.exit("usage: python -m tests.cluster.hide PATH... -- argv...")
    # The parent (whoever started `unshare … hide`) is in the namespace to protect.
    if os.stat("/proc/self/ns/mnt").st_ino == os.stat(f"/proc/{os.getppid()}/ns/mnt").st_ino:
        sys.exit("hide: refusing to mount in the mount namespace it was started from (run under `unshare --mount`)")
    for path in paths:
        subprocess.run(["mount", "--bind", "/dev/null", path], check=True)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
