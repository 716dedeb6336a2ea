"""The one dispatch seam: a Celery app over Redis or RabbitMQ, per-language queues, measured settings.

Only job ids travel through the broker, sealed with the cluster key (`sealing.py`: a worker runs nothing
it cannot open); the jobs themselves are in the job store (`state.py`, always Redis). The API calls
`Dispatcher.submit`; workers consume the queues of the languages whose self-tests passed on their host.

A message carries one job (`EXECUTE_TASK`) or, for a batch, a bundle of up to `bundle_max_jobs` jobs of one
language (`EXECUTE_BUNDLE_TASK`), run one after another in the slot that takes it. A message costs the worker
about as much CPU as a short program (Celery's hand-off to the pool process, the ack, the next fetch), so
bundles are what lets a batch of small programs through the API beat running them bare. Bundles stay small
against the slots that run the language (`bundle_size`: each slot gets several), so a batch still spreads over
every slot, and a slot hands the rest of a bundle back to the queue once it has held it for
`BUNDLE_HANDBACK_S` (worker.py): long jobs never wait in a busy slot while another one idles. The backlog is
counted in the job store in jobs, not in messages (`state.queued_key`).

Common to both brokers (reference/queue-notes.md): late acks + requeue on a lost worker (so a SIGKILLed job
runs again), one message per slot (a slot never reserves a job it cannot start), JSON only, durable queues
and persistent messages, and an attempt counter in the job store against poison pills (`worker.py`).

Redis (the default). A delivered message waits in kombu's `unacked` hash until acked; nothing tells Redis a
consumer died, so kombu restores messages delivered more than a visibility timeout ago. That timeout's
trade-off (long → a dead host's jobs wait that long; short → long jobs are delivered twice) is removed with
a lease: kombu scores each unacked message by its delivery time in its `unacked_index` sorted set, and a
worker renews the score of the message it is running every third of the timeout (`worker.Lease`), so a live
job is never restored, and a dead host's job comes back within about the timeout plus the 2 s sweep.

RabbitMQ (``amqp://``, ``amqps://``). The broker tracks each delivery per connection and requeues a
connection's unacked messages the moment it closes, which the kernel does for every process that dies: a
killed worker's job is redelivered within milliseconds, with no timeout and no lease. A host that vanishes
without closing its TCP connection (power loss, partition, a frozen machine) is noticed by AMQP heartbeats:
RabbitMQ drops a connection silent for two to three heartbeat intervals (`broker_heartbeat_s`, 1 s), so that
job comes back after 2–3 s. The publisher waits for RabbitMQ's confirm (`confirm_publish`), which for a
persistent message in a durable queue is sent once it is on disk: the API answers 202 only for a job that
survives a broker crash. RabbitMQ's `consumer_timeout` (30 min by default) closes the channel of a delivery
unacked that long, i.e. redelivers a job still running; the hard job limit must stay below it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

from amqp.exceptions import AccessRefused, NotAllowed
from celery import Celery
from kombu import Exchange, Queue

from cellblock.config import Settings
from cellblock.errors import InternalError, UserError
from cellblock.redis_url import BROKER_SETTING, is_redis_url, kombu_broker, parse_redis_url, redacted
from cellblock.sealing import Sealer

log = logging.getLogger(__name__)

EXECUTE_TASK = "cellblock.execute"
EXECUTE_BUNDLE_TASK = "cellblock.execute_bundle"
FEATURE_BUNDLES = "bundles"  # WorkerInfo.features of a worker that runs EXECUTE_BUNDLE_TASK (older ones drop it)
BUNDLES_PER_SLOT = 2  # a batch is cut into at least this many bundles per slot that runs its language
BUNDLE_HANDBACK_S = 0.25  # a slot that has held a bundle this long queues the rest of it again (worker.py)
AMQP_SCHEMES = ("amqp", "amqps")
RABBITMQ_CONSUMER_TIMEOUT_S = 1800  # RabbitMQ's default consumer_timeout (rabbitmq.conf), 3.8.15 and later
PUBLISH_TIMEOUT_S = 10.0  # a publish or its confirm waits at most this (a broker in a disk alarm blocks forever)
HEARTBEAT_CHECKS_PER_INTERVAL = 4  # the worker's loop looks this often per heartbeat: a beat leaves ≤ 1.25 s apart


def is_amqp_url(url: str) -> bool:
    """Whether the broker is RabbitMQ (AMQP 0-9-1), as opposed to Redis."""
    return url.lower().startswith(tuple(f"{scheme}://" for scheme in AMQP_SCHEMES))


def check_broker_url(url: str) -> None:
    """Raise `UserError` (field "broker") unless ``url`` is a broker URL we can use: amqp[s]:// or a Redis URL."""

    def bad(why: str) -> UserError:
        return UserError(f"{BROKER_SETTING}: {redacted(url)}: {why}", field="broker")

    if is_redis_url(url):
        try:
            parse_redis_url(url, BROKER_SETTING)
        except UserError as exc:
            raise UserError(exc.message, field="broker") from exc
        return
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme.lower() not in AMQP_SCHEMES:
        raise bad(f"unknown scheme {scheme!r}; use amqp:// or amqps:// (RabbitMQ) or redis://, rediss://, unix:// "
                  "(Redis), e.g. amqp://USER:PASSWORD@HOST:5672/VHOST" if scheme else
                  "not a URL; e.g. amqp://USER:PASSWORD@HOST:5672/VHOST")  # fmt: skip
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - parsing it is the check: out of range or not a number raises ValueError
    except ValueError as exc:
        raise bad(f"bad port ({exc})") from exc
    if not parts.hostname:
        raise bad("no host; e.g. amqp://USER:PASSWORD@HOST:5672/VHOST")
    if parts.query or parts.fragment:
        raise bad("query options are not supported in a RabbitMQ URL")
    if "/" in parts.path.removeprefix("/") and parts.path != "//":
        raise bad("the path is one virtual host (write / as %2F)")


def broker_redis_url(settings: Settings) -> str | None:
    """The broker as a redis-py URL when it is Redis (for the lease), None for RabbitMQ."""
    url = settings.celery_broker_url()
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


def bundle_size(jobs: int, slots: int, most: int) -> int:
    """How many of a batch's `jobs` (one language) travel in one message, given the `slots` of live workers that run
    that language (0: unknown) and the setting `most` (bundle_max_jobs). Small enough that every slot gets
    `BUNDLES_PER_SLOT` bundles; 1 (no bundles) when no live slot is known."""
    if slots <= 0 or jobs <= 1:
        return 1
    return max(1, min(most, -(-jobs // (BUNDLES_PER_SLOT * slots))))


def language_queue(language: str) -> str:
    return f"lang.{language}"


def task_queue(language: str) -> Queue:
    """A language's queue, declared the same way by publishers and consumers: durable, behind a durable direct
    exchange of its own name (what Celery would create on first use, spelled out so both sides agree)."""
    name = language_queue(language)
    return Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)


def _redis_options(settings: Settings) -> dict[str, Any]:
    return {
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
        },
        "worker_disable_prefetch": True,  # kombu's Redis transport fetches only for an idle pool process
    }


def _amqp_options(settings: Settings, url: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        # basic.publish waits for the broker's ack: for a persistent message in a durable queue, sent once on disk
        "broker_transport_options": {"confirm_publish": True},
        "broker_heartbeat": settings.broker_heartbeat_s,
        "broker_heartbeat_checkrate": HEARTBEAT_CHECKS_PER_INTERVAL,
    }
    if url.lower().startswith("amqps://"):
        # py-amqp's bare ssl=True loads no CA and checks no name: ask for the system store and the host's name
        options["broker_use_ssl"] = {
            "context": {"check_hostname": True},
            "server_hostname": urlsplit(url).hostname,
        }
    if settings.job_time_limit_s + 30 > RABBITMQ_CONSUMER_TIMEOUT_S:
        log.warning("job_time_limit_s=%s exceeds RabbitMQ's default consumer_timeout (%s s): raise consumer_timeout "
                    "in rabbitmq.conf above the longest job, or a job running that long is delivered again",
                    settings.job_time_limit_s, RABBITMQ_CONSUMER_TIMEOUT_S)  # fmt: skip
    return options


def make_celery(settings: Settings, languages: list[str] | None = None) -> Celery:
    """The Celery app shared by the API (publisher) and workers (consumers)."""
    # A Redis broker's URL is rewritten for kombu, TLS options included (kombu would not verify rediss:// unless told)
    broker, broker_ssl = kombu_broker(settings.celery_broker_url())
    app = Celery("cellblock", broker=broker)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_delivery_mode="persistent",
        task_time_limit=settings.job_time_limit_s + 30,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        task_queues=[task_queue(name) for name in languages or []],
        task_create_missing_queues=True,
    )
    if is_amqp_url(broker):
        app.conf.update(_amqp_options(settings, broker))
    else:
        app.conf.update(_redis_options(settings))
    if broker_ssl is not None:
        app.conf.broker_use_ssl = broker_ssl
    return app


def ping_broker(settings: Settings, timeout_s: float = 3.0) -> None:
    """Connect to a RabbitMQ broker once, without retries, or say why not: `UserError` when RabbitMQ refused us
    (wrong user or password, no such virtual host: the configuration is wrong), `InternalError` when it could
    not be reached. A Redis broker is checked by `preflight.check_store` (Redis's URLs, passwords and TLS)."""
    url = settings.celery_broker_url()
    if not is_amqp_url(url):
        return
    app = make_celery(settings)
    try:
        with app.connection_for_write(connect_timeout=timeout_s) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=int(timeout_s) or 1)
    except (AccessRefused, NotAllowed) as exc:
        raise UserError(f"the broker at {redacted(url)} refused us ({BROKER_SETTING}): {exc}", field="broker") from exc
    except Exception as exc:  # kombu's OperationalError, socket errors and timeouts, TLS errors, ...
        why = str(exc) or type(exc).__name__
        raise InternalError(f"cannot reach the broker at {redacted(url)} ({BROKER_SETTING}): {why}") from exc


class Dispatcher:
    """Publishes jobs. Blocking (kombu): the API calls it from a thread pool, never on the event loop."""

    def __init__(self, settings: Settings) -> None:
        self.app = make_celery(settings)
        self.sealer = Sealer.from_settings(settings)
        amqp = is_amqp_url(settings.celery_broker_url())
        self.publish_options: dict[str, Any] = (
            {"timeout": PUBLISH_TIMEOUT_S, "confirm_timeout": PUBLISH_TIMEOUT_S} if amqp else {}
        )

    def submit(self, job_ids: list[str], language: str) -> None:
        """Queue one message: one job, or a bundle of jobs of `language` (run in this order by one slot)."""
        self.publish(job_ids, language_queue(language))

    def publish(self, job_ids: list[str], queue: str) -> None:
        # Celery creates (and declares) the queue as `task_queue` spells it: the consumers' queue
        if len(job_ids) == 1:
            task, task_id, payload = EXECUTE_TASK, job_ids[0], job_ids[0]
        else:
            task, task_id, payload = EXECUTE_BUNDLE_TASK, uuid.uuid4().hex, ",".join(job_ids)
        token = self.sealer.seal(payload.encode())
        self.app.send_task(task, args=[token], task_id=task_id, queue=queue, routing_key=queue,
                           **self.publish_options)  # fmt: skip
