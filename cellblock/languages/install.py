"""Install languages on demand: the Debian packages their TOML files name, through apt-get.

`cellblock languages install NAME…|--all|--core` (as root) installs what is missing, then the caller
self-tests the languages through the real sandbox. A worker that is already running takes a new language
within seconds, without a restart: its toolchain watch sees the new binary (`cellblock.toolchains`).

apt-get runs from an argv list with DEBIAN_FRONTEND=noninteractive and --no-install-recommends (a
recommended package is never what a language needs, and recommends of compilers pull in editors and
documentation). Services a package would start (none of ours needs one) are kept stopped by a
policy-rc.d for the install's duration, as scripts/setup does. When apt does not know a package (a machine
whose package lists are old or empty), the lists are updated once and the install retried.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cellblock.errors import InternalError, UserError
from cellblock.languages.registry import Language

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
UNKNOWN_PACKAGE_HINTS = ("Unable to locate package", "has no installation candidate")


class InstallFailed(InternalError):
    code = "install_failed"


def packages_of(languages: Iterable[Language]) -> list[str]:
    """Every Debian package the languages name, each once, in order."""
    return list(dict.fromkeys(pkg for lang in languages for pkg in lang.debian_packages))


def missing_packages(packages: list[str]) -> list[str]:
    """The packages dpkg does not have fully installed."""
    if not packages:
        return []
    done = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages], capture_output=True,
                          text=True, check=False, env=APT_ENV)  # fmt: skip
    installed = {line.split()[0].split(":")[0] for line in done.stdout.splitlines()
                 if line.endswith(" install ok installed")}  # fmt: skip
    return [pkg for pkg in packages if pkg not in installed]


def apt_install_argv(packages: list[str]) -> list[str]:
    return ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]


@contextmanager
def services_kept_stopped() -> Iterator[None]:
    """A policy-rc.d that forbids starting services (exit 101), unless the machine already has a policy."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def install_packages(packages: list[str], say: Callable[[str], None], *, quiet: bool = False) -> None:
    """apt-get install the packages (root only). Raises InstallFailed with apt's own last lines."""
    if not packages:
        return
    if os.geteuid() != 0:
        raise UserError("installing Debian packages needs root: sudo cellblock languages install …")
    say(f"installing Debian packages: {' '.join(packages)}")
    with services_kept_stopped():
        done = _apt(apt_install_argv(packages), quiet)
        if done.returncode != 0 and any(hint in done.stderr for hint in UNKNOWN_PACKAGE_HINTS):
            say("apt does not know some of them: updating the package lists, then trying again")
            _apt(["apt-get", "update", "-q"], quiet)
            done = _apt(apt_install_argv(packages), quiet)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise InstallFailed(f"apt-get install failed (exit {done.returncode}): {tail}")


def _apt(argv: list[str], quiet: bool) -> subprocess.CompletedProcess[str]:
    """Run apt-get; its progress goes to our stdout unless quiet, its errors are kept for the message."""
    stdout = subprocess.DEVNULL if quiet else None
    return subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, check=False,
                          env={**os.environ, **APT_ENV})  # fmt: skip
