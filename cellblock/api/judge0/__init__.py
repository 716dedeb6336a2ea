"""A Judge0 CE 1.13.1 API under /judge0, over Cellblock jobs: point a Judge0 client at BASE/judge0.

Modules: `submissions` (create, batch, get, list, delete), `info` (languages, statuses, about, config_info,
workers, auth checks), `request` (a Judge0 submission → JobSpec), `render` (a job → Judge0's JSON, status
mapping), `archive` (additional_files), `records` (the job store side), `access` (X-Auth-Token/X-Auth-User),
`errors` (Judge0's error shapes), `catalog` (ids, names, config).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from cellblock.api.judge0 import errors, info, submissions

PREFIX = errors.PREFIX


def install(app: FastAPI) -> None:
    """Mount the routes under /judge0 and give that path Judge0's error shapes."""
    router = APIRouter(prefix=PREFIX, tags=["Judge0 CE 1.13.1"], responses=errors.RESPONSES)
    router.include_router(submissions.router)
    router.include_router(info.router)
    app.include_router(router)
    errors.install(app)
