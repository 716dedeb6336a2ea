"""Turning a Piston request into a queued Cellblock job, shared by /execute and the WebSocket.

The same path as `POST /v1/jobs`: `_admit` (our validation, live workers), the backlog check, the API key's
quotas, then `_enqueue` (stored before it is queued). Every failure becomes a `PistonError` with upstream's
shape; user faults are 400 as upstream answers them, our own keep their status (503 backlog, 429 quota).
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError

from cellblock.api.auth import ApiAuth, Held, as_api_error
from cellblock.api.errors import ApiError
from cellblock.api.piston.body import PistonError
from cellblock.api.piston.convert import LiveRuntime, job_spec_fields
from cellblock.api.runtime import ApiRuntime
from cellblock.api.v1 import _admit, _enqueue, _refuse_if_backlogged
from cellblock.auth import ApiKey, Denied
from cellblock.errors import UserError
from cellblock.models import JobSpec


def spec_for(body: Any, runtimes: list[LiveRuntime], rt: ApiRuntime, **extra: Any) -> tuple[LiveRuntime, JobSpec]:
    runtime, fields = job_spec_fields(body, runtimes, rt.settings)
    try:
        return runtime, JobSpec.model_validate({**fields, **extra})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise PistonError(400, f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request") from None


async def submit(rt: ApiRuntime, auth: ApiAuth, caller: ApiKey | None, spec: JobSpec) -> str:
    """Validate, store and queue one job; its id. PistonError on any refusal."""
    try:
        job = await _admit(rt, spec)
        await _refuse_if_backlogged(rt)
    except ApiError as exc:
        raise PistonError(400 if exc.status == 422 else exc.status, exc.message) from None
    except UserError as exc:
        raise PistonError(400, exc.message) from None
    job_id = uuid.uuid4().hex
    held = Held(None, None)
    if caller is not None:
        try:
            held = Held(auth.quotas, await auth.quotas.reserve(caller, [job_id]))
        except Denied as denied:
            raise PistonError(denied.status, as_api_error(denied).message) from None
    try:
        await _enqueue(rt, [(job_id, job)])
    except ApiError as exc:
        await held.release()
        raise PistonError(exc.status, exc.message) from None
    except BaseException:
        await held.release()
        raise
    return job_id
