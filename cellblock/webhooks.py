"""Deliver a finished job's JobResult to its callback_url: POST, retried with exponential backoff.

Runs in the webhook worker's thread pool (`cellblock webhooks`), never in a sandbox slot, so a slow or dead
receiver never holds up code execution. A 2xx ends it; anything else is retried up to webhook_attempts.
"""

from __future__ import annotations

import logging
import time

import httpx
import redis

from cellblock.config import Settings
from cellblock.models import JobSpec
from cellblock.state import as_fields, job_key, result_from_hash

log = logging.getLogger(__name__)


def deliver_webhook(settings: Settings, job_id: str, *, sleep: float = 1.0) -> bool:
    """True when the receiver accepted the result. `sleep` is the first backoff delay (doubling)."""
    store = redis.Redis.from_url(settings.job_store_url(), decode_responses=True)
    fields = as_fields(store.hgetall(job_key(job_id)))
    if "spec" not in fields:
        return False
    spec = JobSpec.model_validate_json(fields["spec"])
    if not spec.callback_url:
        return False
    body = result_from_hash(fields).model_dump_json()
    delay = sleep
    for attempt in range(1, settings.webhook_attempts + 1):
        try:
            response = httpx.post(spec.callback_url, content=body, timeout=settings.webhook_timeout_s,
                                  headers={"content-type": "application/json"})  # fmt: skip
            if response.is_success:
                return True
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        log.warning("job %s: webhook attempt %d failed (%s)", job_id, attempt, problem)
        if attempt < settings.webhook_attempts:
            time.sleep(delay)
            delay *= 2
    return False
