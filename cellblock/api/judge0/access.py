"""Who may call the Judge0 routes: our API keys, in Judge0's headers.

Judge0 authenticates with ``X-Auth-Token`` (accepted everywhere as an API key, like ``Authorization: Bearer``)
and authorizes the list, delete and /authorize calls with ``X-Auth-User``. Here that authorization is our
``admin`` scope: the key in ``X-Auth-User`` (or, without that header, the authenticating key) must have it.
With auth off (a loopback API) every call is let through, as on /v1.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from cellblock.api.auth import _bearer, _token, as_api_error, auth_of, require
from cellblock.auth import ApiKey, Denied, check_scope


async def authorized(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[str | None, Depends(_token)],
) -> ApiKey | None:
    auth = auth_of(request)
    if not auth.required:
        return None
    user = request.headers.get("x-auth-user")
    authn = bearer.credentials if bearer is not None else token
    try:
        if user and authn:  # Judge0 checks the authenticating token first (401), then the user (403)
            await auth.keys.authenticate(authn)
            try:
                key = await auth.keys.authenticate(user)
            except Denied:
                raise Denied(403, "insufficient_scope", "X-Auth-User is not a key with the admin scope") from None
        else:
            key = await auth.keys.authenticate(user or authn)
        check_scope(key, "admin")
        await auth.quotas.spend(key)
    except Denied as denied:
        raise as_api_error(denied) from None
    return key


Reader = Annotated[ApiKey | None, Depends(require("read"))]
Submitter = Annotated[ApiKey | None, Depends(require("submit"))]
Admin = Annotated[ApiKey | None, Depends(authorized)]
