"""Judge0 submissions in the job store: create (job + sealed Judge0Meta + listing index), read, list, delete.

A Judge0 submission is one Cellblock job; its token is the job id in UUID form. The Judge0Meta sits sealed in
the job hash (field ``judge0``), so it expires with the job. A /v1 job read through /judge0 gets a meta
rebuilt from its spec (the CE id of its language, our defaults).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from cellblock.api.judge0 import catalog
from cellblock.api.judge0.errors import rails
from cellblock.api.judge0.render import Judge0Meta
from cellblock.api.runtime import ApiRuntime
from cellblock.api.store import NewJob
from cellblock.dispatch import language_queue
from cellblock.errors import UnknownLanguage
from cellblock.models import JobResult, JobSpec
from cellblock.sealing import SealError
from cellblock.state import (
    JUDGE0_FIELD,
    JUDGE0_SUBMISSIONS,
    as_fields,
    events_key,
    job_key,
    open_spec,
    result_from_hash,
)
from cellblock.validation import ValidJob

TOKEN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
VERSIONS_CACHE_S = 1.0


def job_id_of(token: str) -> str | None:
    token = token.strip().lower()
    return token.replace("-", "") if TOKEN.match(token) else None


@dataclass
class Record:
    fields: dict[str, str]
    result: JobResult
    meta: Judge0Meta

    def spec(self, rt: ApiRuntime) -> JobSpec | None:
        try:
            return open_spec(self.fields, rt.store.sealer)
        except SealError:
            return None


class Versions:
    """Toolchain versions of the live workers, cached for a second (names carry them; submit asks each time)."""

    def __init__(self) -> None:
        self.stamp, self.value = 0.0, dict[str, str]()

    async def get(self, rt: ApiRuntime) -> dict[str, str]:
        if time.monotonic() - self.stamp > VERSIONS_CACHE_S:
            versions: dict[str, str] = {}
            for worker in await rt.store.workers():
                versions.update(worker.language_versions)
            self.stamp, self.value = time.monotonic(), versions
        return dict(self.value)


def _fallback_meta(rt: ApiRuntime, fields: dict[str, str]) -> Judge0Meta:
    """A /v1 job seen through /judge0: its language's CE id and the limits it ran with, in Judge0 units."""
    run = rt.settings.default_run
    language_id, name = 0, fields.get("language", "")
    with contextlib.suppress(UnknownLanguage):  # a language this server no longer knows: still readable
        lang = rt.registry.get(name)
        language_id, name = (lang.judge0_ids or [0])[0], catalog.display_name(lang, None)
    return Judge0Meta(language_id=language_id, language_name=name, cpu_time_limit=run.cpu_time_s,
                      cpu_extra_time=0.0, wall_time_limit=run.wall_time_s, memory_limit=run.memory_mib * 1024,
                      stack_limit=catalog.STACK_KB, max_processes_and_or_threads=run.processes,
                      max_file_size=run.file_size_kib)  # fmt: skip


def record_of(rt: ApiRuntime, fields: dict[str, str]) -> Record:
    meta = None
    if fields.get(JUDGE0_FIELD):
        try:
            meta = Judge0Meta.model_validate_json(rt.store.sealer.open_for(fields["id"], JUDGE0_FIELD,
                                                                           fields[JUDGE0_FIELD]))  # fmt: skip
        except SealError:
            meta = None
    return Record(fields, result_from_hash(fields, rt.store.sealer), meta or _fallback_meta(rt, fields))


async def load_many(rt: ApiRuntime, job_ids: list[str]) -> list[Record | None]:
    """Records in order, None for unknown or expired ids: one pipeline."""
    async with rt.store.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hgetall(job_key(job_id))
        replies = await pipe.execute()
    hashes = [as_fields(raw) for raw in replies]
    return [record_of(rt, fields) if "spec" in fields else None for fields in hashes]


async def load(rt: ApiRuntime, token: str) -> Record:
    job_id = job_id_of(token)
    if job_id is None:
        raise rails(404)
    found = (await load_many(rt, [job_id]))[0]
    if found is None:
        raise rails(404)
    return found


async def create(rt: ApiRuntime, jobs: list[tuple[str, ValidJob, Judge0Meta]]) -> None:
    """Store every job with its meta and index entry, then queue them (a batch in bundles); if queueing fails,
    store nothing."""
    new = [NewJob(job_id, job.spec, language_queue(job.language.name)) for job_id, job, _ in jobs]
    await rt.store.create_jobs(new)
    now = time.time()
    async with rt.store.redis.pipeline(transaction=True) as pipe:
        for job_id, _, meta in jobs:
            sealed = rt.store.sealer.seal_for(job_id, JUDGE0_FIELD, meta.model_dump_json().encode())
            pipe.hset(job_key(job_id), JUDGE0_FIELD, sealed)
        pipe.zadd(JUDGE0_SUBMISSIONS, {job_id: now for job_id, _, _ in jobs})
        await pipe.execute()
    try:
        await rt.dispatch([(job_id, job.language.name) for job_id, job, _ in jobs], bundle=len(jobs) > 1)
    except BaseException:
        await rt.store.delete_jobs(new)
        await rt.store.redis.zrem(JUDGE0_SUBMISSIONS, *[job_id for job_id, _, _ in jobs])
        raise


async def page(rt: ApiRuntime, number: int, per_page: int) -> tuple[list[Record], dict[str, Any]]:
    """One page of Judge0 submissions, newest first, with Judge0's pagination meta."""
    redis = rt.store.redis
    records: list[Record] = []
    total = int(await redis.zcard(JUDGE0_SUBMISSIONS))
    if per_page > 0:
        start = (number - 1) * per_page
        ids = [str(i) for i in await redis.zrevrange(JUDGE0_SUBMISSIONS, start, start + per_page - 1)]
        found = await load_many(rt, ids) if ids else []
        gone = [job_id for job_id, rec in zip(ids, found, strict=True) if rec is None]
        if gone:  # expired jobs leave the index as the listing meets them
            await redis.zrem(JUDGE0_SUBMISSIONS, *gone)
            total -= len(gone)
        records = [rec for rec in found if rec is not None]
    pages = math.ceil(total / per_page) if per_page > 0 else 0
    meta = {"current_page": number, "next_page": number + 1 if number < pages else None,
            "prev_page": number - 1 if number > 1 else None, "total_pages": pages, "total_count": total}  # fmt: skip
    return records, meta


async def delete(rt: ApiRuntime, job_id: str) -> None:
    async with rt.store.redis.pipeline(transaction=True) as pipe:
        pipe.delete(job_key(job_id), events_key(job_id))
        pipe.zrem(JUDGE0_SUBMISSIONS, job_id)
        await pipe.execute()
