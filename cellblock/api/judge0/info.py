"""Judge0's informational routes: languages, statuses, about/version, config_info, workers, auth checks."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from cellblock import __version__
from cellblock.api.judge0 import catalog
from cellblock.api.judge0.access import Admin, Reader
from cellblock.api.judge0.errors import rails
from cellblock.api.judge0.submissions import _versions, runtime
from cellblock.dispatch import language_queue

router = APIRouter()
LICENSE = "Cellblock serves a Judge0 CE 1.13.1 compatible API; it contains no Judge0 code.\n"


@router.get("/languages", summary="Languages a live worker runs, by Judge0 CE id")
async def languages(request: Request, _: Reader) -> JSONResponse:
    rt = runtime(request)
    rows = catalog.active(rt.registry, await _versions.get(rt))
    return JSONResponse([{"id": i, "name": name} for i, _, name in rows])


@router.get("/languages/all", summary="Every language with is_archived, by name")
async def all_languages(request: Request, _: Reader) -> JSONResponse:
    rt = runtime(request)
    rows = catalog.active(rt.registry, await _versions.get(rt))
    body = [{"id": i, "name": name, "is_archived": False} for i, _, name in rows]
    return JSONResponse(sorted(body, key=lambda row: (str(row["name"]), int(str(row["id"])))))


@router.get("/languages/{language_id}", summary="One language: source file, compile and run commands")
async def language(language_id: str, request: Request, _: Reader) -> JSONResponse:
    rt = runtime(request)
    if not language_id.isdigit():
        raise rails(404)
    for i, lang, name in catalog.active(rt.registry, await _versions.get(rt)):
        if i == int(language_id):
            return JSONResponse(catalog.language_detail(i, lang, name))
    raise rails(404)


@router.get("/statuses", summary="The 14 Judge0 statuses")
async def statuses(_: Reader) -> JSONResponse:
    return JSONResponse(catalog.statuses())


@router.get("/about", summary="Version 1.13.1 (what Judge0 clients look for)")
async def about(_: Reader) -> JSONResponse:
    return JSONResponse(catalog.ABOUT)


@router.get("/version", response_class=PlainTextResponse, summary="The Judge0 version served")
async def version(_: Reader) -> str:
    return catalog.VERSION


@router.get("/isolate", response_class=PlainTextResponse, summary="The sandbox (Judge0 names isolate here)")
async def isolate(_: Reader) -> str:
    return f"Cellblock {__version__}: bubblewrap sandbox, cgroup limits (no isolate)"


@router.get("/license", response_class=PlainTextResponse, summary="License note")
async def license_text(_: Reader) -> str:
    return LICENSE


@router.get("/config_info", summary="Judge0's 39 configuration keys with this server's values")
async def config_info(request: Request, _: Reader) -> JSONResponse:
    return JSONResponse(catalog.config_info(runtime(request).settings))


@router.get("/workers", summary="Per language queue: waiting jobs and the workers consuming it")
async def workers(request: Request, _: Reader) -> JSONResponse:
    rt = runtime(request)
    live = await rt.store.workers()
    backlog = await rt.backlog()
    rows = []
    for lang in rt.registry.languages:
        queue = language_queue(lang.name)
        serving = [w for w in live if lang.name in w.languages]
        if not serving and not backlog.get(queue):
            continue
        available = sum(w.slots for w in serving)
        working = min(available, sum(w.busy for w in serving))
        rows.append({"queue": queue, "size": backlog.get(queue, 0), "available": available,
                     "idle": available - working, "working": working, "paused": 0, "failed": 0})  # fmt: skip
    return JSONResponse(rows)


@router.post("/authenticate", summary="200 when X-Auth-Token is a valid key (one that may read)")
async def authenticate(_: Reader) -> Response:
    return Response(status_code=200)


@router.post("/authorize", summary="200 when X-Auth-User (or the key) has the admin scope")
async def authorize(_: Admin) -> Response:
    return Response(status_code=200)
