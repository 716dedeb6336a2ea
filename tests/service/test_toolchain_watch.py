"""A worker whose toolchain vanishes stops taking that language, and takes it again when it comes back.

The worker runs in a mount namespace of its own (`unshare --mount`), so the test can make Ruby genuinely
disappear for that worker alone: /dev/null bind-mounted over the real ruby binary, through `nsenter` into
the worker's namespace. Nothing outside that namespace changes. Two paths are proven:

* the background watch (a stat per language every `toolchain_check_interval_s`): the worker drops Ruby from
  what it advertises and from its consumers, the API refuses Ruby jobs (no live worker runs it), other
  languages go on; when the binary is back, the self-test passes again and Ruby jobs run there again;
* a Ruby job that reaches the worker before the watch noticed (here: the watch never looks): the worker hands
  it back to the broker without counting an attempt, and it finishes on a worker that has Ruby.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cellblock.api.runtime import LANGUAGE_CACHE_S
from tests.service.conftest import CELLBLOCK, Service, made_service, wait_until
from tests.service.test_reliability import attempts, running_starts

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

RUBY = os.path.realpath(shutil.which("ruby") or "/usr/bin/ruby")
RUBY_JOB = {"language": "ruby", "files": [{"name": "main.rb", "content": "puts STDIN.read.upcase"}], "stdin": "ok"}
PY_JOB = {"language": "python3", "files": [{"name": "main.py", "content": "print(input()[::-1])"}], "stdin": "ab"}


def start_isolated_worker(svc: Service, name: str, **env: str) -> subprocess.Popen[bytes]:
    """`cellblock worker` in a private mount namespace (so a binary can be hidden from it alone)."""
    argv = ["unshare", "--mount", "--propagation", "private", "--", *CELLBLOCK, "worker", "--redis", svc.redis.url,
            "--slots", "1", "--name", name]  # fmt: skip
    log = open(svc.root / f"worker-{len(svc.workers)}.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(argv, env={**svc.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    svc.workers.append(proc)
    return proc


def in_namespace_of(proc: subprocess.Popen[bytes], *argv: str) -> None:
    subprocess.run(["nsenter", "--target", str(proc.pid), "--mount", "--", *argv], check=True, timeout=10)


def hide_ruby(proc: subprocess.Popen[bytes]) -> None:
    in_namespace_of(proc, "mount", "--bind", "/dev/null", RUBY)


def restore_ruby(proc: subprocess.Popen[bytes]) -> None:
    in_namespace_of(proc, "umount", RUBY)


def languages_of(api: httpx.Client, name: str) -> list[str] | None:
    for worker in api.get("/v1/workers").json()["workers"]:
        if worker["name"] == name:
            return list(worker["languages"])
    return None


@pytest.fixture
def svc() -> Iterator[Service]:
    with made_service() as service:
        service.start_api()
        yield service
    assert Path(RUBY).stat().st_size > 0  # the host's ruby was never touched


def test_a_vanished_toolchain_is_dropped_and_taken_back(svc: Service) -> None:
    worker = start_isolated_worker(svc, "watched", CELLBLOCK_TOOLCHAIN_CHECK_INTERVAL_S="0.5")
    svc.wait_ready()
    with svc.client() as api:
        assert "ruby" in (languages_of(api, "watched") or [])
        assert api.post("/v1/jobs", params={"wait": "true"}, json=RUBY_JOB).json()["verdict"] == "accepted"

        hide_ruby(worker)
        wait_until(lambda: "ruby" not in (languages_of(api, "watched") or ["ruby"]), timeout=15,
                   what="the worker to drop ruby")  # fmt: skip
        time.sleep(LANGUAGE_CACHE_S + 0.1)  # the API's view of the live languages is cached this long
        refused = api.post("/v1/jobs", json=RUBY_JOB)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "language_unavailable", refused.text
        other = api.post("/v1/jobs", params={"wait": "true"}, json=PY_JOB).json()
        assert other["verdict"] == "accepted" and other["tests"][0]["run"]["stdout"] == "ba\n", other
        log = (svc.root / "worker-0.log").read_text()
        assert "FAIL  ruby: not installed" in log and "no longer taking its jobs" in log, log

        restore_ruby(worker)
        wait_until(lambda: "ruby" in (languages_of(api, "watched") or []), timeout=30,
                   what="the worker to take ruby back")  # fmt: skip
        time.sleep(LANGUAGE_CACHE_S + 0.1)
        again = api.post("/v1/jobs", params={"wait": "true"}, json=RUBY_JOB).json()
        assert again["verdict"] == "accepted" and again["tests"][0]["run"]["stdout"] == "OK\n", again
        assert again["worker"] == "watched"
    assert worker.poll() is None


def test_a_job_that_arrives_first_is_handed_back_not_judged(svc: Service) -> None:
    """The watch never looks (a one-hour interval): the pool process finds ruby gone when the job arrives."""
    blind = start_isolated_worker(svc, "blind", CELLBLOCK_TOOLCHAIN_CHECK_INTERVAL_S="3600")
    svc.wait_ready()
    hide_ruby(blind)
    with svc.client() as api:
        job_id = api.post("/v1/jobs", json=RUBY_JOB).json()["id"]
        log_path = svc.root / "worker-0.log"
        wait_until(lambda: "job handed back" in log_path.read_text(), timeout=30, what="the hand-back")

        def state() -> dict[str, Any]:
            body: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
            return body

        assert state()["state"] == "queued" and attempts(svc, job_id) == 0  # not judged, not an attempt
        svc.start_worker(slots=1, name="sighted")  # ruby is there for this one
        wait_until(lambda: state()["state"] == "done", timeout=60, what="the job on the other worker")
        body = state()
        assert body["verdict"] == "accepted" and body["worker"] == "sighted", body
        assert body["tests"][0]["run"]["stdout"] == "OK\n"
        assert [w for _, w in running_starts(svc, job_id)] == ["sighted"] and attempts(svc, job_id) == 1
    assert blind.poll() is None


# --- a language installed while the worker runs ---------------------------------------------------------------

# A site language (CELLBLOCK_LANGUAGES_DIR) whose toolchain the test "installs" the way apt does: the binary
# first, the library it needs a moment later. Both live under /usr/local (the sandbox binds /usr), with a name
# no other test or package uses, and are removed afterwards.
LATE = f"cellblock-test-late-{os.getpid()}"
LATE_TOML = f'''
name = "late"
display_name = "Late (a language installed while the worker runs)"
debian_packages = []
version_command = ["{LATE}", "--version"]
source_file = "main.late"
run = ["{LATE}", "{{source}}"]

[self_test]
source = "copy"
'''
LATE_BINARY = f"""#!/bin/sh
[ "$1" = --version ] && {{ echo "late 1.2.3"; exit 0; }}
exec python3 /usr/local/lib/{LATE}.py "$@"
"""
LATE_LIBRARY = """import sys
if open(sys.argv[1]).read().strip() == "copy":
    sys.stdout.write(sys.stdin.read())
"""


@pytest.fixture
def late_language(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    languages = tmp_path / "languages"
    languages.mkdir()
    (languages / "late.toml").write_text(LATE_TOML)
    binary, library = Path("/usr/local/bin", LATE), Path("/usr/local/lib", f"{LATE}.py")
    try:
        yield languages, binary, library
    finally:
        binary.unlink(missing_ok=True)
        library.unlink(missing_ok=True)


def test_a_language_installed_while_the_worker_runs_is_taken_without_a_restart(
    late_language: tuple[Path, Path, Path],
) -> None:
    languages, binary, library = late_language
    late_job = {"language": "late", "files": [{"name": "main.late", "content": "copy"}], "stdin": "installed"}
    with made_service(CELLBLOCK_LANGUAGES_DIR=str(languages)) as svc:
        svc.start_api()
        worker = start_isolated_worker(svc, "running", CELLBLOCK_TOOLCHAIN_CHECK_INTERVAL_S="0.5")
        svc.wait_ready()
        api = svc.client()
        assert "late" not in (languages_of(api, "running") or []) and "python3" in (languages_of(api, "running") or [])
        refused = api.post("/v1/jobs", json=late_job)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "language_unavailable", refused.text

        # The binary arrives without its library: the self-test fails, the language stays out.
        binary.write_text(LATE_BINARY)
        binary.chmod(0o755)
        log_path = svc.root / "worker-0.log"
        wait_until(lambda: "late changed and fails" in log_path.read_text(), timeout=15,
                   what="the watch to try the new binary")  # fmt: skip
        assert "self-test failed" in log_path.read_text()
        assert "late" not in (languages_of(api, "running") or [])

        # The library arrives; the binary does not change again (no new stat), the watch retries anyway.
        library.write_text(LATE_LIBRARY)
        wait_until(lambda: "late" in (languages_of(api, "running") or []), timeout=30,
                   what="the worker to take the new language")  # fmt: skip
        time.sleep(LANGUAGE_CACHE_S + 0.1)
        done = api.post("/v1/jobs", params={"wait": "true"}, json=late_job).json()
        assert done["verdict"] == "accepted" and done["tests"][0]["run"]["stdout"] == "installed", done
        assert done["worker"] == "running" and worker.poll() is None
        api.close()
