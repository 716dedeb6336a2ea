"""A worker's watch over its toolchains: a language whose toolchain vanished or broke stops being taken, one
that comes (back) is taken again, all without a restart.

Theory of operation. At start a worker self-tests every installed language and consumes the queues of those
that passed (`worker.start_worker`). Afterwards this thread, in the worker's main process:

* every `toolchain_check_interval_s` takes a fingerprint of each language's toolchain binary (found on the
  sandbox's PATH, then resolved: inode, size, mtime): a stat per language, so it can run every few seconds;
* re-runs the self-test of a language whose fingerprint changed (removed, reinstalled, upgraded, newly
  installed), and of every language each `self_test_interval_s` (a broken shared library changes no stat);
* hands the differences to `on_change(added, removed)`: the worker then cancels or adds the Celery consumer
  of each language's queue and republishes its WorkerInfo, so the API stops offering a language no live
  worker runs and the broker stops routing it here.

Between a toolchain vanishing and the next check, a job of that language may still arrive: the pool process
checks the binary before it starts a job and hands such a job back to the broker (`worker.ToolchainMissing`).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cellblock.engine import Engine
from cellblock.errors import CellblockError
from cellblock.languages.registry import SANDBOX_PATH, Language

log = logging.getLogger(__name__)

Fingerprint = tuple[int, int, int, int] | None  # (device, inode, size, mtime_ns) of the resolved binary


def fingerprint(language: Language) -> Fingerprint:
    """Identity of the language's toolchain binary as the sandbox would find it; None if it is not there."""
    found = shutil.which(language.toolchain_binary(), path=SANDBOX_PATH)
    if found is None:
        return None
    try:
        st = os.stat(os.path.realpath(found))
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class Status:
    passed: bool
    version: str | None
    reason: str


def evaluate(engine: Engine, language: Language) -> Status:
    """Is the language usable here: installed, a version we can read, and its self-test passing?"""
    version = language.host_version()
    if version is None:
        return Status(False, None, "toolchain not installed: apt-get install " + " ".join(language.debian_packages))
    try:
        ok, reason = engine.self_test(language)
    except CellblockError as exc:
        ok, reason = False, exc.message
    return Status(ok, version, "ok" if ok else f"self-test failed: {reason}")


Changes = Callable[[dict[str, Status], dict[str, Status]], None]  # (added, removed) by language name


class ToolchainWatch(threading.Thread):
    """Re-checks the toolchains in the background and reports which languages to add or remove."""

    def __init__(self, engine: Engine, serving: dict[str, Status], on_change: Changes, *, check_interval_s: float,
                 self_test_interval_s: float) -> None:  # fmt: skip
        super().__init__(daemon=True, name="toolchain-watch")
        self.engine = engine
        self.serving = dict(serving)  # language name → its passing verdict
        self.on_change = on_change
        self.check_interval_s = check_interval_s
        self.self_test_interval_s = self_test_interval_s
        self.prints = {lang.name: fingerprint(lang) for lang in engine.registry.languages}
        self.last_full = time.monotonic()
        self.stopped = threading.Event()

    def check(self, *, full: bool = False) -> None:
        """One pass: re-evaluate what changed (or everything, when `full`) and report the differences."""
        added: dict[str, Status] = {}
        removed: dict[str, Status] = {}
        for lang in self.engine.registry.languages:
            now = fingerprint(lang)
            changed = now != self.prints[lang.name]
            self.prints[lang.name] = now
            if not (changed or (full and (now is not None or lang.name in self.serving))):
                continue
            verdict = evaluate(self.engine, lang)
            if verdict.passed and lang.name not in self.serving:
                added[lang.name] = verdict
            elif not verdict.passed and lang.name in self.serving:
                removed[lang.name] = verdict
        for name in removed:
            del self.serving[name]
        self.serving.update(added)
        if added or removed:
            self.on_change(added, removed)

    def run(self) -> None:
        while not self.stopped.wait(self.check_interval_s):
            full = self.self_test_interval_s > 0 and time.monotonic() - self.last_full >= self.self_test_interval_s
            if full:
                self.last_full = time.monotonic()
            try:
                self.check(full=full)
            except Exception:  # the watch must outlive any one bad check; the worker keeps what it had
                log.exception("toolchain check failed")

    def stop(self) -> None:
        self.stopped.set()
