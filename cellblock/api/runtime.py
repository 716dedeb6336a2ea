"""What the API process holds while it runs: settings, languages, the job store and the dispatcher."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from cellblock.api.errors import ApiError
from cellblock.api.store import AsyncStore
from cellblock.config import Settings
from cellblock.dispatch import Dispatcher, language_queue
from cellblock.languages.registry import Registry

LANGUAGE_CACHE_S = 1.0
BACKLOG_CACHE_S = 1.0


class ApiRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = Registry.load(settings.languages_dir)
        self.dispatcher = Dispatcher(settings)
        self.store = AsyncStore(settings, self.dispatcher.sealer)
        self.publisher = ThreadPoolExecutor(max_workers=8, thread_name_prefix="publish")  # kombu blocks
        self._languages: tuple[float, set[str]] = (0.0, set())
        self._depths: tuple[float, dict[str, int]] = (0.0, {})

    def queues(self) -> list[str]:
        return [language_queue(lang.name) for lang in self.registry.languages]

    async def live_languages(self) -> set[str]:
        """Languages some live worker runs (cached for a second: the hot path asks on every submit)."""
        stamp, names = self._languages
        if time.monotonic() - stamp > LANGUAGE_CACHE_S:
            names = {lang for worker in await self.store.workers() for lang in worker.languages}
            self._languages = (time.monotonic(), names)
        return names

    async def backlog(self) -> dict[str, int]:
        """Jobs waiting per language queue: Redis lists read directly, or RabbitMQ's counts (cached for a second:
        the hot path asks on every submit, and each count is a round trip to the broker)."""
        if self.dispatcher.queues_in_store:
            return await self.store.backlog(self.queues())
        stamp, depths = self._depths
        if time.monotonic() - stamp > BACKLOG_CACHE_S:
            loop = asyncio.get_running_loop()
            try:
                depths = await loop.run_in_executor(self.publisher, self.dispatcher.queue_depths, self.queues())
            except Exception as exc:
                raise ApiError(503, "broker_unavailable", "the job queue is unreachable",
                               headers={"Retry-After": "5"}) from exc  # fmt: skip
            self._depths = (time.monotonic(), depths)
        return depths

    async def dispatch(self, job_id: str, language: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.publisher, self.dispatcher.submit, job_id, language)
        except Exception as exc:
            raise ApiError(503, "broker_unavailable", "the job queue is unreachable; nothing was accepted",
                           headers={"Retry-After": "5"}) from exc  # fmt: skip

    async def close(self) -> None:
        self.publisher.shutdown(wait=False)
        await self.store.close()
