"""The runtimes Piston clients see: each language a live worker runs, by Piston name, with its real version.

Read from the workers' heartbeats (`WorkerInfo.language_versions`) and cached for a second on the app, like
`ApiRuntime.live_languages`: /execute resolves every request's runtime through it. Workers with different
versions of one toolchain: the highest is listed (a job goes to any worker of its language queue).
"""

from __future__ import annotations

import time

from starlette.requests import HTTPConnection

from cellblock.api.piston.convert import LiveRuntime
from cellblock.api.piston.semver import parse_version
from cellblock.api.runtime import ApiRuntime

CACHE_S = 1.0


class RuntimeCache:
    def __init__(self, api: ApiRuntime) -> None:
        self.api = api
        self._cached: tuple[float, list[LiveRuntime]] = (0.0, [])

    async def get(self) -> list[LiveRuntime]:
        stamp, runtimes = self._cached
        if time.monotonic() - stamp > CACHE_S:
            runtimes = await self._read()
            self._cached = (time.monotonic(), runtimes)
        return runtimes

    async def _read(self) -> list[LiveRuntime]:
        versions: dict[str, set[str]] = {}
        for worker in await self.api.store.workers():
            for name, version in worker.language_versions.items():
                versions.setdefault(name, set()).add(version)
        out = []
        for lang in self.api.registry.languages:
            if lang.piston_name is None:
                continue  # not a Piston language (e.g. Judge0's multi-file program)
            found = [v for v in versions.get(lang.name, ()) if v]
            if found:
                out.append(LiveRuntime(lang, max(found, key=lambda v: parse_version(v) or (0, 0, 0))))
        return out


async def live_runtimes(request: HTTPConnection) -> list[LiveRuntime]:
    """The app's cache (made on first use: the Piston routes own it, `create_app` need not know it)."""
    state = request.app.state
    cache: RuntimeCache | None = getattr(state, "piston_runtimes", None)
    if cache is None:
        cache = RuntimeCache(state.runtime)
        state.piston_runtimes = cache
    return await cache.get()
