"""Managing API keys over HTTP (scope ``admin``): create, list, revoke — what `cellblock keys` does locally.

Only on a server that requires keys: with auth off anyone who reaches the API could otherwise mint a key
that stays valid once auth is turned on.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from cellblock.api.auth import ApiAuth, auth_of, require
from cellblock.api.errors import ERROR_RESPONSES, ApiError
from cellblock.auth import ApiKey, CreatedKey, KeyRequest, KeyUsage

router = APIRouter(responses=ERROR_RESPONSES)
Admin = Annotated[ApiKey | None, Depends(require("admin"))]


def _enabled(request: Request) -> ApiAuth:
    auth = auth_of(request)
    if not auth.required:
        raise ApiError(403, "auth_disabled", "this server runs without API keys; manage keys with `cellblock keys` "
                       "and start the server with auth required")  # fmt: skip
    return auth


@router.post("/v1/keys", status_code=201, response_model=CreatedKey, summary="Create an API key (shown once)")
async def create_key(body: KeyRequest, request: Request, _: Admin) -> CreatedKey:
    return await _enabled(request).keys.create(body)


@router.get("/v1/keys", response_model=list[KeyUsage], summary="Every API key, with its status and usage")
async def list_keys(request: Request, _: Admin) -> list[KeyUsage]:
    return await _enabled(request).keys.list_keys()


@router.delete("/v1/keys/{key_id}", response_model=ApiKey, summary="Revoke an API key (at once, for good)")
async def revoke_key(key_id: str, request: Request, _: Admin) -> ApiKey:
    key = await _enabled(request).keys.revoke(key_id)
    if key is None:
        raise ApiError(404, "not_found", f"no API key {key_id}", "key_id")
    return key
