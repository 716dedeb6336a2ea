"""The worker's side of an interactive job's input: a thread that follows ``cb:job:{id}:input`` (state.py).

The API appends sealed entries (stdin text, end-of-input, a signal name) as the client sends them; this thread
reads them with a blocking XREAD on its own connection, opens each with the cluster key for this job only
(an entry sealed for another job, or forged, is dropped and logged), and queues them. The sandbox's watch
loop drains the queue through `take()` (the `LiveInput` protocol) without ever waiting on Redis.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import redis

from cellblock.config import Settings
from cellblock.redis_url import redis_kwargs
from cellblock.sealing import Sealer
from cellblock.state import as_fields, input_key, open_input

log = logging.getLogger(__name__)
BLOCK_MS = 200  # how long one XREAD waits; bounds how late `stop()` is noticed


class LiveFeed(threading.Thread):
    def __init__(self, settings: Settings, sealer: Sealer, job_id: str) -> None:
        super().__init__(daemon=True, name=f"live-input-{job_id[:8]}")
        self.job_id = job_id
        self.sealer = sealer
        self.client: Any = redis.Redis(**redis_kwargs(settings.job_store_url()), decode_responses=True,
                                       socket_timeout=10)  # fmt: skip
        self.items: deque[tuple[str, bytes]] = deque()
        self.stopped = threading.Event()

    def take(self) -> list[tuple[str, bytes]]:
        taken = []
        while self.items:
            taken.append(self.items.popleft())  # deque pops are atomic: no lock with the reader thread
        return taken

    def run(self) -> None:
        last = "0-0"
        while not self.stopped.is_set():
            try:
                reply = self.client.xread({input_key(self.job_id): last}, block=BLOCK_MS, count=100)
            except redis.RedisError as exc:
                log.warning("job %s: reading live input failed: %s", self.job_id, exc)
                self.stopped.wait(0.5)
                continue
            for entry_id, raw in reply[0][1] if reply else ():
                last = entry_id
                item = open_input(self.job_id, as_fields(raw), self.sealer)
                if item is not None:
                    kind, data = item
                    self.items.append((kind, data.encode("utf-8", "surrogatepass")))

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=2 * BLOCK_MS / 1000 + 1)
        self.client.close()
