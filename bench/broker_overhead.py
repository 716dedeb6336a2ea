"""What the broker costs per job: Redis (the default) against RabbitMQ with Cellblock's settings.

Run on demand, never as part of the test suite::

    .venv/bin/python bench/broker_overhead.py [--jobs 2000]

Starts a private redis-server (unix socket, AOF everysec, as the service runs it) and a private RabbitMQ node
(`tests/service/rabbitmq.py`), then, interleaving the two brokers job by job so that noise hits both alike:

* publish: `Dispatcher.submit` — what the API waits for before it answers 202 (seal, Celery message, and for
  RabbitMQ the publisher confirm, sent once the persistent message is on disk);
* round trip: submit, then a kombu consumer on its own connection (prefetch 1, late ack) receives and acks
  it — the dispatch latency a worker slot sees, without the sandbox.

Prints the median and p99 of each in milliseconds and the RabbitMQ/Redis ratio of the medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from kombu import Connection, Consumer, Message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.service: the private servers

from cellblock.config import Settings
from cellblock.dispatch import Dispatcher, task_queue
from cellblock.redis_url import kombu_broker
from tests.service.conftest import RedisServer
from tests.service.rabbitmq import running_rabbitmq

LANGUAGE = "python3"


class Broker:
    """A dispatcher and a consumer on one broker, and the timings taken through them."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.dispatcher = Dispatcher(settings)
        url, ssl = kombu_broker(settings.celery_broker_url())
        self.connection = Connection(url, ssl=ssl or False)
        self.received: list[str] = []
        self.consumer = Consumer(self.connection, queues=[task_queue(LANGUAGE)], callbacks=[self._on_message],
                                 accept=["json"], prefetch_count=1)  # fmt: skip
        self.consumer.consume()
        self.publish_ns: list[int] = []
        self.round_trip_ns: list[int] = []

    def _on_message(self, body: Any, message: Message) -> None:
        self.received.append(str(message.headers.get("id")))
        message.ack()

    def publish(self) -> None:
        job_id = uuid.uuid4().hex
        start = time.perf_counter_ns()
        self.dispatcher.submit(job_id, LANGUAGE)
        self.publish_ns.append(time.perf_counter_ns() - start)

    def round_trip(self) -> None:
        job_id = uuid.uuid4().hex
        start = time.perf_counter_ns()
        self.dispatcher.submit(job_id, LANGUAGE)
        while job_id not in self.received:
            self.connection.drain_events(timeout=10)
        self.round_trip_ns.append(time.perf_counter_ns() - start)
        self.received.clear()

    def close(self) -> None:
        self.consumer.cancel()
        self.connection.release()


def summary(label: str, redis_ns: list[int], amqp_ns: list[int]) -> None:
    def ms(values: list[int], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))] / 1e6

    r_med, a_med = statistics.median(redis_ns) / 1e6, statistics.median(amqp_ns) / 1e6
    print(f"{label:<11} redis median {r_med:6.3f} ms  p99 {ms(redis_ns, 0.99):6.3f} ms | rabbitmq median "
          f"{a_med:6.3f} ms  p99 {ms(amqp_ns, 0.99):6.3f} ms | ratio {a_med / r_med:4.1f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per broker and measure (default 2000)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cellblock-bench-broker-", dir="/var/tmp"))
    (root / "redis").mkdir()
    (root / "rabbitmq").mkdir()
    redis_server = RedisServer(root / "redis")
    try:
        redis_server.start()
        with running_rabbitmq(root / "rabbitmq") as node:
            common = {"data_dir": root / "data", "redis_url": redis_server.url,
                      "cluster_keys": [Fernet.generate_key().decode()]}  # fmt: skip
            redis = Broker("redis", Settings(**common))
            amqp = Broker("rabbitmq", Settings(**common, broker_url=node.url()))
            for broker in (redis, amqp):  # warm-up: connections, queue declarations
                for _ in range(50):
                    broker.round_trip()
                broker.round_trip_ns.clear()
            for _ in range(args.jobs):
                for broker in (redis, amqp):
                    broker.round_trip()
            for _ in range(args.jobs):
                for broker in (redis, amqp):
                    broker.publish()
            print(f"{args.jobs} jobs per broker, interleaved; RabbitMQ started in {node.startup_s:.1f} s")
            summary("publish", redis.publish_ns, amqp.publish_ns)
            summary("round trip", redis.round_trip_ns, amqp.round_trip_ns)
            for broker in (redis, amqp):
                broker.close()
    finally:
        redis_server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
