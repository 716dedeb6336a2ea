"""Piston v2-compatible API under /api/v2: runtimes, execute, and the interactive WebSocket /api/v2/connect.

Existing Piston clients work unchanged when pointed at this server: `rest.py` (REST), `ws.py` (WebSocket),
`convert.py` (Piston's fields, units, messages and statuses ↔ our JobSpec and JobResult), `body.py` (the
JSON, text/plain and form bodies real clients send), `semver.py` (version selectors).
"""

from __future__ import annotations

from fastapi import APIRouter

from cellblock.api.piston.rest import router as rest_router
from cellblock.api.piston.ws import router as ws_router

router = APIRouter()
router.include_router(rest_router)
router.include_router(ws_router)

__all__ = ["router"]
