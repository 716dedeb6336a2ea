"""A worker host: `cellblock worker` checks the sandbox and the cluster key, self-tests every installed
language through the sandbox, then becomes a Celery prefork worker (`worker.build_app`) with one process per
sandbox slot, consuming only the queues of the languages that passed.

In the main process, beside Celery's loop: a heartbeat thread publishes this worker's `WorkerInfo` (with a
TTL, so a dead host disappears), and the toolchain watch (`toolchains.py`) re-checks the languages; `Routing`
applies what it finds (Celery consumers cancelled or added, WorkerInfo republished).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import redis

from cellblock import __version__
from cellblock.config import Settings
from cellblock.dispatch import FEATURE_BUNDLES, language_queue
from cellblock.engine import Engine
from cellblock.languages.registry import Language, Registry
from cellblock.redis_url import redis_kwargs
from cellblock.sandbox.host import SandboxHost
from cellblock.sealing import Sealer
from cellblock.state import WORKERS, WorkerInfo, check_cluster_key, now_iso, running_key, worker_key
from cellblock.toolchains import PassedSelfTests, Status, ToolchainWatch, evaluate_many, fingerprint
from cellblock.worker import build_app, celery_node_name

log = logging.getLogger(__name__)


def offered_languages(settings: Settings, registry: Registry) -> list[Language]:
    """The languages this worker may offer: `worker_languages` (names or aliases), else all. Raises
    UnknownLanguage (a user error: exit 2) for a name the registry does not know."""
    if not settings.worker_languages:
        return registry.languages
    chosen = {registry.get(name).name for name in settings.worker_languages}
    return [lang for lang in registry.languages if lang.name in chosen]


SELF_TEST_CONDITIONS = ("default_run", "default_compile", "bwrap_path", "cgroup_root", "cgroup_name", "first_uid",
                        "box_size_mib", "box_inodes", "tmp_size_mib", "isolation")  # fmt: skip


def self_test_conditions(settings: Settings) -> dict[str, object]:
    """The settings a self-test's outcome depends on besides the language and its toolchain: a worker whose
    limits or sandbox differ never trusts another worker's verdict."""
    return settings.model_dump(mode="json", include=set(SELF_TEST_CONDITIONS))


def self_test_languages(engine: Engine, say: Callable[[str], None], languages: list[Language],
                        settings: Settings) -> dict[str, Status]:  # fmt: skip
    """Run the self-test of each installed language through the real sandbox, one per slot at once (or trust
    one that passed here within `self_test_reuse_s`); the passing ones, by name. Languages not installed here
    are left out quietly (`cellblock languages` lists them)."""
    installed = [lang for lang in languages if fingerprint(lang) is not None]
    recent = PassedSelfTests(settings.slot_lock_dir / "self-tests", settings.self_test_reuse_s,
                             sandbox=self_test_conditions(settings))  # fmt: skip
    passing: dict[str, Status] = {}
    for name, status in evaluate_many(engine, installed, settings.slot_count(), recent).items():
        say(f"{'ok  ' if status.passed else 'FAIL'}  {name} {status.version or ''}"
            + ("" if status.passed and status.reason == "ok" else f": {status.reason}"))  # fmt: skip
        if status.passed:
            passing[name] = status
    return passing


class Routing:
    """Applies the toolchain watch's findings: cancel or add this worker's consumer of each language's queue
    (Celery remote control, through the broker to this node) and republish the WorkerInfo."""

    def __init__(self, app: Any, node: str, heartbeat: Heartbeat, say: Callable[[str], None]) -> None:
        self.app = app
        self.destination = [celery_node_name(node)]
        self.heartbeat = heartbeat
        self.say = say

    def __call__(self, added: dict[str, Status], removed: dict[str, Status]) -> None:
        for name, status in removed.items():
            self.say(f"FAIL  {name}: {status.reason}; no longer taking its jobs")
            self.app.control.cancel_consumer(language_queue(name), destination=self.destination)
        for name, status in added.items():
            self.say(f"ok    {name} {status.version}: taking its jobs")
            queue = language_queue(name)
            self.app.control.add_consumer(queue, exchange=queue, routing_key=queue, destination=self.destination)
        self.heartbeat.update(added, removed)


class Heartbeat(threading.Thread):
    """Publishes this worker's WorkerInfo every heartbeat_interval_s, with a TTL so a dead host disappears."""

    def __init__(self, settings: Settings, info: WorkerInfo) -> None:
        super().__init__(daemon=True, name="heartbeat")
        self.settings = settings
        self.info = info
        self.lock = threading.Lock()  # the toolchain watch changes the languages while beats go out
        self.redis = redis.Redis(**redis_kwargs(settings.job_store_url()), decode_responses=True)
        self.stopped = threading.Event()

    def update(self, added: dict[str, Status], removed: dict[str, Status]) -> None:
        """Languages added to or removed from what this worker runs; published at once."""
        with self.lock:
            versions = {k: v for k, v in self.info.language_versions.items() if k not in removed}
            versions.update({name: status.version or "" for name, status in added.items()})
            self.info.language_versions = dict(sorted(versions.items()))
            self.info.languages = sorted(versions)
            self.info.queues = [language_queue(name) for name in self.info.languages]
        self.beat()

    def beat(self) -> None:
        busy = self.redis.scard(running_key(self.info.name))
        with self.lock:
            self.info.busy, self.info.last_seen = busy, now_iso()
            payload = self.info.model_dump_json()
        ttl_ms = int(self.settings.worker_ttl_s * 1000)
        with self.redis.pipeline() as pipe:
            pipe.sadd(WORKERS, self.info.name)
            pipe.set(worker_key(self.info.name), payload, px=ttl_ms)
            pipe.execute()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.heartbeat_interval_s):
            try:
                self.beat()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)

    def stop(self) -> None:
        self.stopped.set()
        try:
            self.redis.delete(worker_key(self.info.name))
            self.redis.srem(WORKERS, self.info.name)
        except redis.RedisError:
            pass


def start_worker(settings: Settings, say: Callable[[str], None], *, name: str | None = None) -> int:
    """`cellblock worker`: check the sandbox, self-test languages, consume their queues until stopped."""
    host = SandboxHost(settings)  # raises SandboxUnavailable: no sandbox, no worker
    sealer = Sealer.from_settings(settings)
    with redis.Redis(**redis_kwargs(settings.job_store_url()), socket_timeout=10) as client:
        check_cluster_key(client, sealer)  # raises SealError: a host with the wrong key takes no job
    engine = Engine(settings, Registry.load(settings.languages_dir), host)
    languages = offered_languages(settings, engine.registry)
    passing = self_test_languages(engine, say, languages, settings)
    if not passing:
        say("no language passed its self-test: this worker would run nothing")
        return 1
    node = name or f"cellblock-{socket.gethostname()}-{os.getpid()}"
    slots = settings.slot_count()
    info = WorkerInfo(name=node, host=socket.gethostname(), slots=slots, languages=[], queues=[],
                      version=__version__, features=[FEATURE_BUNDLES], started_at=now_iso(),
                      last_seen=now_iso())  # fmt: skip
    heartbeat = Heartbeat(settings, info)
    heartbeat.update(passing, {})
    heartbeat.start()
    app = build_app(settings, sorted(passing), node, sealer)
    watch = ToolchainWatch(engine, passing, Routing(app, node, heartbeat, say),
                           check_interval_s=settings.toolchain_check_interval_s,
                           self_test_interval_s=settings.self_test_interval_s, languages=languages)  # fmt: skip
    watch.start()
    say(f"worker {node}: {slots} slots, queues {', '.join(info.queues)}")
    try:
        app.worker_main([
            *(["--quiet"] if settings.log_format == "json" else []),  # Celery's option: no banner, every line JSON
            "worker", "--pool", "prefork", "--concurrency", str(slots), "--queues", ",".join(info.queues),
            "--hostname", node, "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--optimization", "fair", "--loglevel", "WARNING", "--max-tasks-per-child", "1000",
        ])  # fmt: skip
    finally:
        watch.stop()
        heartbeat.stop()
    return 0
