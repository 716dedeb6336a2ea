"""Piston v2's REST routes: GET /api/v2/runtimes and POST /api/v2/execute.

/execute is one Cellblock job run with wait, like ``POST /v1/jobs?wait=true``: the request becomes a JobSpec
(`convert.py`), is queued through the same path as /v1 (`submit.py`), and while it runs we read its event
stream, collecting stdout/stderr chunks in order so that `output` interleaves them as they were produced.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from cellblock.api.auth import auth_of, require
from cellblock.api.piston.body import PistonError, read_body
from cellblock.api.piston.convert import Chunks, piston_result
from cellblock.api.piston.runtimes import live_runtimes
from cellblock.api.piston.schemas import PistonExecute, PistonMessage, PistonResult, PistonRuntime
from cellblock.api.piston.submit import spec_for, submit
from cellblock.api.store import AsyncStore
from cellblock.api.v1 import runtime
from cellblock.auth import ApiKey
from cellblock.models import JobResult
from cellblock.state import TERMINAL_STATES

router = APIRouter(prefix="/api/v2", tags=["Piston v2"])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": PistonMessage, "description": "Piston's validation errors, with its messages."},
    415: {"model": PistonMessage, "description": "A body that is neither JSON (any type) nor a form."},
    503: {"model": PistonMessage, "description": "Backlog full or the queue unavailable."},
}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its $defs inlined (an openapi_extra body cannot use local $refs)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    result: dict[str, Any] = walk(schema)
    return result


EXECUTE_BODY = {"requestBody": {"required": True, "content": {
    kind: {"schema": _inline(PistonExecute.model_json_schema())}
    for kind in ("application/json", "text/plain", "application/x-www-form-urlencoded")
}}}  # fmt: skip


def piston_error(exc: PistonError) -> JSONResponse:
    headers = {"Retry-After": "5"} if exc.status == 503 else None
    return JSONResponse({"message": exc.message}, status_code=exc.status, headers=headers)


def chunk_text(data: dict[str, Any]) -> str:
    text = str(data.get("data", ""))
    return base64.b64decode(text).decode("utf-8", "replace") if data.get("encoding") == "base64" else text


async def wait_collecting(store: AsyncStore, job_id: str, timeout_s: float) -> tuple[JobResult | None, Chunks]:
    """The finished job (None on timeout) and its output chunks per step, in the order they were streamed."""
    chunks: Chunks = {}

    async def until_result() -> JobResult | None:
        async for _, kind, data in store.events(job_id):
            if kind in ("stdout", "stderr") and isinstance(data, dict):
                chunks.setdefault(str(data.get("step")), []).append((kind, chunk_text(data)))
            elif kind == "result" and data is not None:
                return JobResult.model_validate(data)
        return await store.result(job_id)

    try:
        return await asyncio.wait_for(until_result(), timeout_s), chunks
    except TimeoutError:
        return None, chunks


@router.get("/runtimes", response_model=list[PistonRuntime], summary="Piston: the runtimes live workers run",
            dependencies=[Depends(require("read"))])  # fmt: skip
async def runtimes(request: Request) -> list[PistonRuntime]:
    return [PistonRuntime(language=rt.name, version=rt.version, aliases=rt.language.piston_aliases)
            for rt in await live_runtimes(request)]  # fmt: skip


@router.post("/execute", response_model=PistonResult, responses=ERRORS, openapi_extra=EXECUTE_BODY,
             summary="Piston: run a program and answer with its compile and run stages")  # fmt: skip
async def execute(request: Request, caller: Annotated[ApiKey | None, Depends(require("submit"))]) -> JSONResponse:
    rt = runtime(request)
    try:
        body = await read_body(request)
        live, spec = spec_for(body, await live_runtimes(request), rt)
        job_id = await submit(rt, auth_of(request), caller, spec)
    except PistonError as exc:
        return piston_error(exc)
    result, chunks = await wait_collecting(rt.store, job_id, rt.settings.job_time_limit_s)
    if result is None or result.state not in TERMINAL_STATES:
        return JSONResponse({"message": f"job {job_id} did not finish in {rt.settings.job_time_limit_s} s"},
                            status_code=500)  # fmt: skip
    return JSONResponse(piston_result(result, live, chunks))
