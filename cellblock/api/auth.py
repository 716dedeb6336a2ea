"""API keys on the HTTP side: one dependency per route names the scope it needs.

    @router.get("/v1/jobs/{job_id}", dependencies=[Depends(require("read"))])

With auth off (the default on a loopback address) the dependency lets everything through and returns None;
otherwise it reads the key from ``Authorization: Bearer <key>`` or Judge0's ``X-Auth-Token: <key>``,
verifies it (401), checks the scope (403) and spends one token of the key's rate (429 + Retry-After). Routes
that submit jobs also `reserve` them against the key's quotas. /healthz, /readyz, /docs and /openapi.json
take no key. The rules themselves live in `cellblock.auth`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cellblock.api.errors import ApiError
from cellblock.auth import ApiKey, AsyncKeys, Denied, Scope, check_scope
from cellblock.config import Settings
from cellblock.quotas import Quotas, Reservation

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer", description="An API key from `cellblock keys create`.")
_token = APIKeyHeader(name="X-Auth-Token", auto_error=False, scheme_name="X-Auth-Token",
                      description="The same key in Judge0's header.")  # fmt: skip


class ApiAuth:
    """What the app holds for authentication: whether keys are required, and the key store."""

    def __init__(self, settings: Settings, redis: Any) -> None:
        self.required = settings.auth_required()
        self.keys = AsyncKeys(redis)
        self.quotas = Quotas(redis)
        if self.required:
            log.info("API keys are required on every route but /healthz, /readyz and the docs")
        elif settings.auth == "off":
            log.warning("auth is off: anyone who can reach %s may run code here", settings.api_host)


def as_api_error(denied: Denied) -> ApiError:
    headers: dict[str, str] = {}
    if denied.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="cellblock"' + (
            "" if denied.code == "unauthenticated" else ', error="invalid_token"'
        )
    if denied.retry_after_s is not None:
        headers["Retry-After"] = str(denied.retry_after_s)
    return ApiError(denied.status, denied.code, denied.message, denied.field, headers or None)


def auth_of(request: Request) -> ApiAuth:
    auth: ApiAuth = request.app.state.auth
    return auth


def require(scope: Scope) -> Callable[..., Awaitable[ApiKey | None]]:
    """The dependency of a route that needs `scope`: the caller's key, or None when auth is off."""

    async def caller(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        token: Annotated[str | None, Depends(_token)],
    ) -> ApiKey | None:
        auth = auth_of(request)
        if not auth.required:
            return None
        presented = bearer.credentials if bearer is not None else token
        try:
            key = await auth.keys.authenticate(presented)
            check_scope(key, scope)
            await auth.quotas.spend(key)
        except Denied as denied:
            raise as_api_error(denied) from None
        return key

    return caller


class Held:
    """Jobs counted against the caller's quotas; `release` hands them back when the submission fails."""

    def __init__(self, quotas: Quotas | None, reservation: Reservation | None) -> None:
        self.quotas, self.reservation = quotas, reservation

    @property
    def key_id(self) -> str | None:
        return self.reservation.key_id if self.reservation else None

    async def release(self) -> None:
        if self.quotas is not None and self.reservation is not None:
            await self.quotas.release(self.reservation)
            self.reservation = None


async def reserve(request: Request, caller: ApiKey | None, job_ids: Sequence[str]) -> Held:
    """Count `job_ids` against the caller's max_running and daily_jobs (429 when over); no-op without a key."""
    if caller is None:
        return Held(None, None)
    quotas = auth_of(request).quotas
    try:
        return Held(quotas, await quotas.reserve(caller, job_ids))
    except Denied as denied:
        raise as_api_error(denied) from None
