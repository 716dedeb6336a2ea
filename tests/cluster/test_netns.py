"""The test hosts themselves (`netns.Network`, `hide.py`): what the multi-host test relies on, checked fast."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from tests.cluster.netns import Network, root_namespace_view
from tests.service.conftest import wait_until

pytestmark = [pytest.mark.sandbox]  # root: namespaces, veths, mounts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_hosts_talk_over_the_bridge_and_leave_nothing_behind() -> None:
    before = root_namespace_view()
    net = Network(["A", "B"])
    try:
        assert root_namespace_view() == before  # nothing in the root namespace: no link, address or route
        with net.entered(net["A"]), socket.create_server((net["A"].address, 0)) as server:
            port = server.getsockname()[1]
            with net.entered(net["B"]), socket.create_connection((net["A"].address, port), timeout=5) as client:
                peer, _ = server.accept()
                with peer:
                    client.sendall(b"ping")
                    assert peer.recv(4) == b"ping" and peer.getpeername()[0] == net["B"].address
        sleeper = net.start(net["B"], ["sleep", "600"], env={"PATH": "/usr/bin:/bin"}, log="sleep.log")
        # nsenter enters B's namespace a moment after it starts: wait for it to be there, then check
        wait_until(lambda: sleeper.pid in net.processes(net["B"]), timeout=10, what="the process to be on host B")
        assert net.processes(net["A"]) == []
    finally:
        net.close()
    assert sleeper.poll() is not None
    assert net.leftovers() == ([], []) and net.killed_at_close == []
    assert not net.root.exists()


def test_hide_makes_a_binary_absent_only_in_its_own_mount_namespace() -> None:
    """What the worker sees under `hide`: no ruby on PATH (a device, not an executable); everyone else: ruby."""
    ruby = os.path.realpath(shutil.which("ruby") or "ruby not installed")
    which = [sys.executable, "-c", "import shutil; print(shutil.which('ruby'))"]
    hide = [sys.executable, "-m", "tests.cluster.hide", ruby, "--"]
    refused = subprocess.run([*hide, *which], cwd=REPO, capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "refusing to mount" in refused.stderr, refused.stderr
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    hidden = subprocess.run([*unshare, *hide, *which], cwd=REPO, capture_output=True, text=True, check=True)
    assert hidden.stdout.strip() == "None", hidden
    ran = subprocess.run([*unshare, *hide, "ruby", "--version"], cwd=REPO, capture_output=True, check=False)
    assert ran.returncode != 0 and b"Permission denied" in ran.stderr, ran
    assert subprocess.run(which, capture_output=True, text=True, check=True).stdout.strip() == shutil.which("ruby")
