"""What the API process holds while it runs: settings, languages, the job store and the dispatcher."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from cellblock.api.errors import ApiError
from cellblock.api.store import AsyncStore
from cellblock.config import Settings
from cellblock.dispatch import FEATURE_BUNDLES, Dispatcher, bundle_size, language_queue
from cellblock.languages.registry import Registry

LANGUAGE_CACHE_S = 1.0
PUBLISH_CONCURRENCY = 32  # messages handed to the broker at once (each takes a publisher thread and a connection)


class ApiRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = Registry.load(settings.languages_dir)
        self.dispatcher = Dispatcher(settings)
        self.store = AsyncStore(settings, self.dispatcher.sealer)
        self.publisher = ThreadPoolExecutor(max_workers=8, thread_name_prefix="publish")  # kombu blocks
        self._live_cache: tuple[float, dict[str, int], set[str]] = (0.0, {}, set())  # (when read, `_live`'s answer)

    def queues(self) -> list[str]:
        return [language_queue(lang.name) for lang in self.registry.languages]

    async def live_languages(self) -> set[str]:
        """Languages some live worker runs."""
        return set((await self._live())[0])

    async def _live(self) -> tuple[dict[str, int], set[str]]:
        """(slots of live workers per language they run, languages some live worker of which takes no bundles: an
        older version). Cached for a second: the hot path asks on every submit."""
        stamp, slots, unbundled = self._live_cache
        if time.monotonic() - stamp > LANGUAGE_CACHE_S:
            slots, unbundled = {}, set()
            for worker in await self.store.workers():
                for lang in worker.languages:
                    slots[lang] = slots.get(lang, 0) + worker.slots
                    if FEATURE_BUNDLES not in worker.features:
                        unbundled.add(lang)
            self._live_cache = (time.monotonic(), slots, unbundled)
        return slots, unbundled

    async def backlog(self) -> dict[str, int]:
        """Jobs waiting per language queue (counted in the job store, whichever the broker)."""
        return await self.store.backlog(self.queues())

    async def dispatch(self, jobs: list[tuple[str, str]], bundle: bool = False) -> None:
        """Queue stored jobs, given as (job id, language name): one message each, or with `bundle` (a batch) in
        bundles of one language sized by `bundle_size`. Raises ApiError 503 when the broker is unreachable."""
        groups: dict[str, list[str]] = {}
        for job_id, language in jobs:
            groups.setdefault(language, []).append(job_id)
        slots, unbundled = await self._live() if bundle else ({}, set())
        messages = []
        for language, ids in groups.items():
            live = 0 if language in unbundled else slots.get(language, 0)
            size = bundle_size(len(ids), live, self.settings.bundle_max_jobs)
            messages += [(ids[i : i + size], language) for i in range(0, len(ids), size)]
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)

        async def publish(job_ids: list[str], language: str) -> None:
            async with gate:
                await loop.run_in_executor(self.publisher, self.dispatcher.submit, job_ids, language)

        try:
            await asyncio.gather(*(publish(ids, language) for ids, language in messages))
        except Exception as exc:
            raise ApiError(503, "broker_unavailable", "the job queue is unreachable; nothing was accepted",
                           headers={"Retry-After": "5"}) from exc  # fmt: skip

    async def close(self) -> None:
        self.publisher.shutdown(wait=False)
        await self.store.close()
