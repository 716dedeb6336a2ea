"""A worker's watch over its toolchains: a language whose toolchain vanished or broke stops being taken, one
that comes (back) is taken again, all without a restart.

Theory of operation. At start a worker self-tests every installed language and consumes the queues of those
that passed (`worker.start_worker`). Afterwards this thread, in the worker's main process:

* every `toolchain_check_interval_s` takes a fingerprint of each language's toolchain binary (found on the
  sandbox's PATH, then resolved: inode, size, mtime): a stat per language, so it can run every few seconds;
* re-runs the self-test of a language whose fingerprint changed (removed, reinstalled, upgraded, newly
  installed), and of every language each `self_test_interval_s` (a broken shared library changes no stat);
  a language that fails right after a change is tried again at every check for `RETRY_AFTER_CHANGE_S`,
  because a package manager unpacks the binary before the libraries it needs (`cellblock languages install`
  while the worker runs: the language is taken within seconds of apt finishing, no restart);
* hands the differences to `on_change(added, removed)`: the worker then cancels or adds the Celery consumer
  of each language's queue and republishes its WorkerInfo, so the API stops offering a language no live
  worker runs and the broker stops routing it here.

At start a worker trusts a self-test that passed on this machine within `self_test_reuse_s` for the very same
toolchain binary (fingerprint), language definition and Cellblock version (`PassedSelfTests`, files under the
machine-wide slot lock dir on /run): the same trust the watch gives a passing verdict between its full rounds.
A second worker, a restart, or a test suite starting many workers then starts in a second, not after every
compiler has run; `cellblock languages` and `cellblock doctor` always run the self-tests.

Between a toolchain vanishing and the next check, a job of that language may still arrive: the pool process
checks the binary before it starts a job and hands such a job back to the broker (`worker.ToolchainMissing`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cellblock import __version__
from cellblock.errors import CellblockError
from cellblock.languages.registry import SANDBOX_PATH, Language

if TYPE_CHECKING:
    from cellblock.engine import Engine

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


RETRY_AFTER_CHANGE_S = 60.0


@dataclass
class Status:
    passed: bool
    version: str | None
    reason: str
    installed: bool = True

    @property
    def state(self) -> str:
        """One word for listings: ok, failing (installed but unusable, `reason` says why) or not-installed."""
        return "ok" if self.passed else "failing" if self.installed else "not-installed"


def evaluate(engine: Engine, language: Language) -> Status:
    """Is the language usable here: installed, a version we can read, and its self-test passing?"""
    if fingerprint(language) is None:
        return Status(False, None, f"not installed: cellblock languages install {language.name}", installed=False)
    version = language.host_version()
    if version is None:
        return Status(False, None, f"cannot read its version with {' '.join(language.version_command)!r}")
    try:
        ok, reason = engine.self_test(language)
    except CellblockError as exc:
        ok, reason = False, exc.message
    return Status(ok, version, "ok" if ok else f"self-test failed: {reason}")


class PassedSelfTests:
    """Self-tests that passed on this machine recently: one small file per (Cellblock version, language
    definition, toolchain fingerprint), its mtime the time it passed. Files are written whole and renamed
    into place, so concurrent workers never read half a file; a lost race only costs a repeated self-test."""

    def __init__(self, directory: Path, max_age_s: float, sandbox: object = None) -> None:
        """`sandbox`: what else decides a self-test's outcome (the default limits, the sandbox's shape), as
        JSON-able data: a worker with other limits never trusts another's verdict."""
        self.directory = directory
        self.max_age_s = max_age_s
        self.sandbox = sandbox

    def _path(self, language: Language) -> Path | None:
        print_ = fingerprint(language)
        if print_ is None or self.max_age_s <= 0:
            return None
        identity = json.dumps([__version__, language.model_dump(mode="json"), print_, self.sandbox], sort_keys=True,
                              default=str)  # fmt: skip
        return self.directory / (hashlib.sha256(identity.encode()).hexdigest() + ".json")

    def recall(self, language: Language) -> Status | None:
        path = self._path(language)
        try:
            if path is None or time.time() - path.stat().st_mtime > self.max_age_s:
                return None
            version = json.loads(path.read_text())["version"]
        except (OSError, ValueError, KeyError):
            return None
        age = time.time() - path.stat().st_mtime
        return Status(True, version, f"ok (its self-test passed on this machine {age:.0f} s ago)")

    def remember(self, language: Language, status: Status) -> None:
        path = self._path(language)
        if path is None or not status.passed:
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps({"language": language.name, "version": status.version}))
        temporary.replace(path)


def evaluate_many(engine: Engine, languages: Iterable[Language], threads: int,
                  recent: PassedSelfTests | None = None) -> dict[str, Status]:  # fmt: skip
    """`evaluate` each language, `threads` at a time (each self-test holds one sandbox slot), by name in the
    order given. A worker's start and `cellblock languages` wait for the slowest compiler, not for the sum.
    With `recent`, a language whose self-test passed here recently is not tested again."""

    def one(language: Language) -> Status:
        remembered = recent.recall(language) if recent is not None else None
        if remembered is not None:
            return remembered
        status = evaluate(engine, language)
        if recent is not None:
            recent.remember(language, status)
        return status

    languages = list(languages)
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="self-test") as pool:
        verdicts = list(pool.map(one, languages))
    return {lang.name: verdict for lang, verdict in zip(languages, verdicts, strict=True)}


Changes = Callable[[dict[str, Status], dict[str, Status]], None]  # (added, removed) by language name


class ToolchainWatch(threading.Thread):
    """Re-checks the toolchains in the background and reports which languages to add or remove."""

    def __init__(self, engine: Engine, serving: dict[str, Status], on_change: Changes, *, check_interval_s: float,
                 self_test_interval_s: float, languages: list[Language] | None = None) -> None:  # fmt: skip
        super().__init__(daemon=True, name="toolchain-watch")
        self.engine = engine
        self.languages = languages if languages is not None else engine.registry.languages  # the ones to watch
        self.serving = dict(serving)  # language name → its passing verdict
        self.on_change = on_change
        self.check_interval_s = check_interval_s
        self.self_test_interval_s = self_test_interval_s
        self.prints = {lang.name: fingerprint(lang) for lang in self.languages}
        self.retry_until: dict[str, float] = {}  # failed right after a change: try again until then (monotonic)
        self.last_full = time.monotonic()
        self.stopped = threading.Event()

    def check(self, *, full: bool = False) -> None:
        """One pass: re-evaluate what changed (or everything, when `full`) and report the differences."""
        added: dict[str, Status] = {}
        removed: dict[str, Status] = {}
        now_s = time.monotonic()
        for lang in self.languages:
            now = fingerprint(lang)
            changed = now != self.prints[lang.name]
            self.prints[lang.name] = now
            retry = self.retry_until.get(lang.name, 0.0) > now_s
            if not (changed or retry or (full and (now is not None or lang.name in self.serving))):
                continue
            verdict = evaluate(self.engine, lang)
            if changed and verdict.installed and not verdict.passed:
                self.retry_until[lang.name] = now_s + RETRY_AFTER_CHANGE_S
                log.warning("%s changed and fails: %s (trying again for %.0f s)", lang.name, verdict.reason,
                            RETRY_AFTER_CHANGE_S)  # fmt: skip
            elif verdict.passed or not verdict.installed:
                self.retry_until.pop(lang.name, None)
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
