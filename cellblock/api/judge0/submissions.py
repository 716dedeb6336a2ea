"""Judge0's /submissions routes: create (single, `wait`), batch create and get, get, list, delete.

Request parameters come from the query string or the body, merged like Rails does (the body wins); the body
may be JSON or form-encoded. Bodies are read by hand, not by a pydantic model, so that every problem gets
Judge0's answer (422 field hash, 400 ``{"error"}``) rather than ours.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from cellblock.api.auth import reserve
from cellblock.api.errors import ApiError
from cellblock.api.judge0 import records, render
from cellblock.api.judge0.access import Admin, Reader, Submitter
from cellblock.api.judge0.errors import Invalid, Judge0Error, error, judge0_field, rails
from cellblock.api.judge0.request import translate
from cellblock.api.runtime import ApiRuntime
from cellblock.api.v1 import _admit
from cellblock.errors import UserError
from cellblock.models import JobSpec, JobState
from cellblock.state import TERMINAL_STATES
from cellblock.validation import ValidJob

router = APIRouter()
CONTROL = frozenset({"base64_encoded", "wait", "fields", "tokens", "page", "per_page"})
UTF8_ERROR = ("some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true "
              "query parameter")  # fmt: skip
UTF8_MANY = ("some attributes for one or more submissions cannot be converted to UTF-8, use base64_encoded=true "
             "query parameter")  # fmt: skip
B64 = Annotated[str | None, Query(description="`true`: source_code, stdin, expected_output and outputs in base64.")]
FIELDS = Annotated[str | None, Query(description="Comma-separated fields, or `*` for all.")]
_versions = records.Versions()


def runtime(request: Request) -> ApiRuntime:
    rt: ApiRuntime = request.app.state.runtime
    return rt


def requested_fields(raw: str | None) -> tuple[str, ...]:
    if raw is None or not raw.strip():
        return render.DEFAULT_FIELDS
    names = [part.strip() for part in raw.split(",") if part.strip()]
    if "*" in names:
        return render.ALL_FIELDS
    invalid = [name for name in names if name not in render.ALL_FIELDS]
    if invalid:
        raise error(400, f"invalid fields: [{', '.join(invalid)}]")
    return tuple(dict.fromkeys(names))


async def body_params(request: Request) -> dict[str, Any]:
    """Query and body merged (Rails' params); a body that is not JSON where JSON is required is a 400."""
    params: dict[str, Any] = {k: v for k, v in request.query_params.items() if k not in CONTROL}
    body = await request.body()
    if not body.strip():
        return params
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return params
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise rails(400) from None
    if isinstance(parsed, dict):  # Rails files any other JSON under `_json`: no submission attributes
        params.update(parsed)
    return params


async def _admit_one(rt: ApiRuntime, params: dict[str, Any], b64: bool) -> tuple[ValidJob, render.Judge0Meta]:
    spec, meta = translate(params, b64, rt.settings, rt.registry, await _versions.get(rt))
    return await _admit(rt, spec), meta


async def _queue_room(rt: ApiRuntime, count: int) -> None:
    if sum((await rt.backlog()).values()) + count > rt.settings.max_backlog:
        raise Judge0Error(503, {"error": "queue is full"}, {"Retry-After": "5"})


def _rendered(record: records.Record, rt: ApiRuntime, fields: tuple[str, ...], b64: bool) -> dict[str, Any]:
    needs_spec = bool({"source_code", "stdin", "expected_output"} & set(fields))
    spec: JobSpec | None = record.spec(rt) if needs_spec else None
    return render.submission(record.result, spec, record.meta, fields, b64)


@router.post("/submissions", status_code=201, summary="Create a submission (Judge0)")
async def create_submission(request: Request, caller: Submitter, base64_encoded: B64 = None,
                            wait: Annotated[str | None, Query(description="`true`: answer when it has run.")] = None,
                            fields: FIELDS = None) -> JSONResponse:  # fmt: skip
    rt = runtime(request)
    wanted = requested_fields(fields)
    b64 = base64_encoded == "true"
    await _queue_room(rt, 1)
    job, meta = await _admit_one(rt, await body_params(request), b64)
    job_id = uuid.uuid4().hex
    held = await reserve(request, caller, [job_id])
    try:
        await records.create(rt, [(job_id, job, meta)])
    except BaseException:
        await held.release()
        raise
    token = render.token_of(job_id)
    if wait != "true":
        return JSONResponse({"token": token}, status_code=201)
    result = await rt.store.wait(job_id, rt.settings.job_time_limit_s)
    record = await records.load(rt, token)
    if result is not None and result.state in TERMINAL_STATES:
        record.result = result
    try:
        return JSONResponse(_rendered(record, rt, wanted, b64), status_code=201)
    except render.UnconvertibleOutput:
        return JSONResponse({"error": UTF8_ERROR, "token": token}, status_code=201)


@router.post("/submissions/batch", status_code=201, summary="Create many submissions (Judge0)")
async def create_batch(request: Request, caller: Submitter, base64_encoded: B64 = None) -> JSONResponse:
    rt = runtime(request)
    b64 = base64_encoded == "true"
    params = await body_params(request)
    items = params.get("submissions")
    count = len(items) if isinstance(items, list) else 0
    await _queue_room(rt, count or 1)
    if count > rt.settings.max_batch_jobs:
        raise error(400, f"number of submissions in a batch should be less than or equal to "
                         f"{rt.settings.max_batch_jobs}")  # fmt: skip
    if count == 0 or not isinstance(items, list):
        raise error(400, "there should be at least one submission in a batch")
    answers: list[dict[str, Any]] = []
    admitted: list[tuple[str, ValidJob, render.Judge0Meta]] = []
    for item in items:
        try:
            job, meta = await _admit_one(rt, item if isinstance(item, dict) else {}, b64)
        except Invalid as exc:
            answers.append(dict(exc.errors))
            continue
        except UserError as exc:
            answers.append({judge0_field(exc.field): [exc.message]})
            continue
        except ApiError as exc:  # e.g. no live worker runs the language: that item only
            if exc.status != 422:
                raise
            answers.append({judge0_field(exc.field): [exc.message]})
            continue
        job_id = uuid.uuid4().hex
        admitted.append((job_id, job, meta))
        answers.append({"token": render.token_of(job_id)})
    if admitted:
        held = await reserve(request, caller, [job_id for job_id, _, _ in admitted])
        try:
            await records.create(rt, admitted)
        except BaseException:
            await held.release()
            raise
    return JSONResponse(answers, status_code=201 if admitted else 422)


@router.get("/submissions/batch", summary="Get many submissions (Judge0)")
async def get_batch(request: Request, _: Reader, base64_encoded: B64 = None, fields: FIELDS = None,
                    tokens: str | None = None,
                    tokens_header: Annotated[str | None, Header(alias="tokens")] = None) -> JSONResponse:  # fmt: skip
    rt = runtime(request)
    wanted = requested_fields(fields)
    names = [t.strip() for t in (tokens_header or tokens or "").strip().split(",") if t.strip()]
    if len(names) > rt.settings.max_batch_jobs:
        raise error(400, f"number of submissions in a batch should be less than or equal to "
                         f"{rt.settings.max_batch_jobs}")  # fmt: skip
    if not names:
        raise error(400, "there should be at least one submission in a batch")
    ids = [records.job_id_of(name) for name in names]
    known = [job_id for job_id in ids if job_id is not None]
    found = dict(zip(known, await records.load_many(rt, known), strict=True)) if known else {}
    out: list[dict[str, Any] | None] = []
    try:
        for job_id in ids:
            record = found.get(job_id) if job_id else None
            out.append(_rendered(record, rt, wanted, base64_encoded == "true") if record else None)
    except render.UnconvertibleOutput:
        raise error(400, UTF8_MANY) from None
    return JSONResponse({"submissions": out})


@router.get("/submissions/{token}", summary="Get a submission (Judge0)")
async def get_submission(token: str, request: Request, _: Reader, base64_encoded: B64 = None,
                         fields: FIELDS = None) -> JSONResponse:  # fmt: skip
    rt = runtime(request)
    wanted = requested_fields(fields)
    record = await records.load(rt, token)
    try:
        return JSONResponse(_rendered(record, rt, wanted, base64_encoded == "true"))
    except render.UnconvertibleOutput:
        raise error(400, UTF8_ERROR) from None


@router.get("/submissions", summary="List submissions, newest first (Judge0; needs authorization)")
async def list_submissions(request: Request, _: Admin, base64_encoded: B64 = None, fields: FIELDS = None,
                           page: str | None = None, per_page: str | None = None) -> JSONResponse:  # fmt: skip
    rt = runtime(request)
    wanted = requested_fields(fields)
    number, size = _to_i(page, 1), _to_i(per_page, 20)
    if number <= 0:
        raise error(400, f"invalid page: {number}")
    if size < 0:
        raise error(400, f"invalid per_page: {size}")
    found, meta = await records.page(rt, number, size)
    try:
        rows = [_rendered(record, rt, wanted, base64_encoded == "true") for record in found]
    except render.UnconvertibleOutput:
        raise error(400, UTF8_MANY) from None
    return JSONResponse({"submissions": rows, "meta": meta})


@router.delete("/submissions/{token}", summary="Delete a finished submission (Judge0; needs authorization)")
async def delete_submission(token: str, request: Request, _: Admin, fields: FIELDS = None) -> JSONResponse:
    rt = runtime(request)
    wanted = requested_fields(fields)
    record = await records.load(rt, token)
    if record.result.state in (JobState.QUEUED, JobState.RUNNING):
        status = 1 if record.result.state == JobState.QUEUED else 2
        raise error(400, f"submission cannot be deleted because its status is {status} ({render.STATUSES[status]})")
    body = _rendered(record, rt, wanted, True)  # Judge0 answers a delete in base64, always
    await records.delete(rt, record.result.id)
    return JSONResponse(body)


def _to_i(raw: str | None, default: int) -> int:
    """Ruby's String#to_i: leading digits (with a sign), else 0."""
    if raw is None:
        return default
    text = raw.strip()
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    number = ""
    for char in digits:
        if not char.isdigit():
            break
        number += char
    return sign * int(number) if number else 0
