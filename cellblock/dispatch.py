"""The one dispatch seam: a Celery app over Redis (or RabbitMQ), per-language queues, measured settings.

Only a job id travels through the broker, sealed with the cluster key (`sealing.py`: a worker runs nothing
it cannot open); the job itself is in the job store (`state.py`). The API calls
`Dispatcher.submit`; workers consume the queues of the languages whose self-tests passed on their host.
Settings follow reference/queue-notes.md: late acks + requeue on a lost worker (so a SIGKILLed job runs
again), no prefetch (a slot never reserves a job it cannot start), JSON only, a visibility timeout above the
longest job (so a slow job is not delivered twice), a fast sweep of a dead host's unacked jobs, and an
attempt counter in the job store against poison pills (`worker.py`).

The visibility timeout trade-off (long → a dead host's jobs wait that long; short → long jobs are delivered
twice) is removed with a lease: kombu's Redis transport remembers when each unacked message was delivered
(a score in its `unacked_index` sorted set) and restores those older than the timeout. A worker renews the
score of the message it is running every third of the timeout (`worker.Lease`), so a live job is never
restored, and a dead host's job comes back within about the timeout plus the sweep interval.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from cellblock.config import Settings
from cellblock.sealing import Sealer

EXECUTE_TASK = "cellblock.execute"


def broker_redis_url(settings: Settings) -> str | None:
    """The broker as a redis-py URL when it is Redis (for the lease), None for RabbitMQ."""
    url = settings.celery_broker_url()
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


def language_queue(language: str) -> str:
    return f"lang.{language}"


def make_celery(settings: Settings, languages: list[str] | None = None) -> Celery:
    """The Celery app shared by the API (publisher) and workers (consumers)."""
    app = Celery("cellblock", broker=settings.celery_broker_url())
    queues = [Queue(language_queue(name), routing_key=language_queue(name)) for name in languages or []]
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_time_limit=settings.job_time_limit_s + 30,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        task_queues=queues,
        task_create_missing_queues=True,
    )
    return app


class Dispatcher:
    """Publishes jobs. Blocking (kombu): the API calls it from a thread pool, never on the event loop."""

    def __init__(self, settings: Settings) -> None:
        self.app = make_celery(settings)
        self.sealer = Sealer.from_settings(settings)

    def submit(self, job_id: str, language: str) -> None:
        queue = language_queue(language)
        token = self.sealer.seal(job_id.encode())
        self.app.send_task(EXECUTE_TASK, args=[token], task_id=job_id, queue=queue, routing_key=queue)
