"""Piston's interactive WebSocket, /api/v2/connect: one interactive Cellblock job per socket.

Protocol (JSON text messages with a ``type``), as upstream, plus what upstream lacks:

* client → server: ``init`` (the /execute fields; must come within 1 s, else close 4001), ``data``
  ``{stream: "stdin", data}`` (another stream: close 4004), ``signal`` ``{signal: "SIGINT"}`` (a name not in
  Piston's list: close 4005), and our ``eof`` (end of input: the program reads EOF; upstream has none).
  ``data``/``signal``/``eof`` before ``init``: close 4003; a second ``init``: close 4000.
* server → client: ``runtime`` ``{language, version}``, ``stage`` ``{stage}``, ``data`` ``{stream, data}`` as
  produced, ``exit`` ``{stage, code, signal, status, message, error}`` after each stage, ``error`` ``{message}``
  then close 4002 (bad init, bad JSON), and close 4999 "Job Completed" at the end.

Unlike upstream, signals really reach the program (`sandbox/live.py`). Input goes to the job's sealed input
stream (`state.input_key`), which the worker feeds into the sandbox's stdin pipe; output comes from the job's
event stream, as for /v1 events. A client that goes away cancels its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from cellblock.api.auth import as_api_error
from cellblock.api.errors import error_body
from cellblock.api.piston.body import PistonError
from cellblock.api.piston.convert import stage
from cellblock.api.piston.rest import chunk_text
from cellblock.api.piston.runtimes import live_runtimes
from cellblock.api.piston.submit import spec_for, submit
from cellblock.api.runtime import ApiRuntime
from cellblock.auth import ApiKey, Denied, check_scope
from cellblock.models import LIVE_SIGNALS, JobResult, StepResult
from cellblock.state import input_entry, input_key

router = APIRouter(prefix="/api/v2")
INIT_TIMEOUT_S = 1.0


class Closing(Exception):
    """Close the socket with this code and reason (after an `error` message when `notify`)."""

    def __init__(self, code: int, reason: str, notify: str | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.notify = code, reason, notify


async def _authenticate(ws: WebSocket) -> ApiKey | None:
    """Auth on connect, as for every route (scope submit); a refusal is the HTTP answer to the handshake."""
    auth = ws.app.state.auth
    if not auth.required:
        return None
    header = ws.headers.get("authorization", "")
    presented = header[7:] if header.lower().startswith("bearer ") else ws.headers.get("x-auth-token")
    try:
        key: ApiKey = await auth.keys.authenticate(presented)
        check_scope(key, "submit")
        await auth.quotas.spend(key)
    except Denied as denied:
        error = as_api_error(denied)
        answer = JSONResponse(error_body(error.code, error.message, error.field), status_code=error.status,
                              headers=error.headers)  # fmt: skip
        try:
            await ws.send_denial_response(answer)
        except RuntimeError:  # the server lacks the denial-response extension: a plain refusal (HTTP 403)
            await ws.close(1008)
        raise
    return key


def _parse(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError:
        raise Closing(4002, "Notified Error", "the message is not valid JSON") from None
    if not isinstance(message, dict):
        raise Closing(4002, "Notified Error", "a message must be a JSON object with a type")
    return message


async def _await_init(ws: WebSocket) -> dict[str, Any]:
    """The init message, within 1 s of connecting (other messages before it close the socket)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + INIT_TIMEOUT_S
    while True:
        try:
            text = await asyncio.wait_for(ws.receive_text(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise Closing(4001, "Initialization Timeout") from None
        message = _parse(text)
        if message.get("type") == "init":
            return message
        if message.get("type") in ("data", "signal", "eof"):
            raise Closing(4003, "Not yet initialized")


async def _feed(ws: WebSocket, rt: ApiRuntime, job_id: str) -> None:
    """Client messages → the job's sealed input stream, until the client goes away."""
    key = input_key(job_id)
    while True:
        message = _parse(await ws.receive_text())
        kind = message.get("type")
        if kind == "init":
            raise Closing(4000, "Already Initialized")
        if kind == "data":
            if message.get("stream") != "stdin":
                raise Closing(4004, "Can only write to stdin")
            entry = input_entry(job_id, "stdin", str(message.get("data", "")), rt.dispatcher.sealer)
        elif kind == "signal":
            if message.get("signal") not in LIVE_SIGNALS:
                raise Closing(4005, "Invalid signal")
            entry = input_entry(job_id, "signal", str(message["signal"]), rt.dispatcher.sealer)
        elif kind == "eof":
            entry = input_entry(job_id, "eof", "", rt.dispatcher.sealer)
        else:
            continue  # unknown types are ignored, as upstream
        async with rt.store.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, entry)
            pipe.expire(key, rt.settings.result_retention_s + rt.settings.job_time_limit_s)
            await pipe.execute()


def _exit(label: str, step: StepResult | None) -> dict[str, Any]:
    if step is None:
        return {"type": "exit", "stage": label, "code": None, "signal": None, "status": "XX", "message": None,
                "error": "the stage did not run"}  # fmt: skip
    out = stage(step)
    return {"type": "exit", "stage": label, "code": out["code"], "signal": out["signal"], "status": out["status"],
            "message": out["message"], "error": out["message"] if out["status"] else None}  # fmt: skip


async def _relay(ws: WebSocket, rt: ApiRuntime, job_id: str) -> None:
    """The job's events → Piston messages, until its result."""
    compile_exited = False
    async for _, kind, data in rt.store.events(job_id):
        step = data if isinstance(data, dict) else {}
        if kind == "step" and step.get("phase") == "started":
            await ws.send_json({"type": "stage", "stage": "compile" if step.get("step") == "compile" else "run"})
        elif kind in ("stdout", "stderr") and step:
            await ws.send_json({"type": "data", "stream": kind, "data": chunk_text(step)})
        elif kind == "step" and step.get("step") == "compile" and step.get("outcome") == "ok":
            compile_exited = True  # a compile that failed ends the job: its exit comes from the result below
            await ws.send_json({"type": "exit", "stage": "compile", "code": 0, "signal": None, "status": None,
                                "message": None, "error": None})  # fmt: skip
        elif kind == "result" and data is not None:
            result = JobResult.model_validate(data)
            if result.compile is not None and not compile_exited:
                await ws.send_json(_exit("compile", result.compile))
            run = result.tests[0].run if result.tests else None
            if run is not None or result.compile is None:
                await ws.send_json(_exit("run", run))
            return


async def _session(ws: WebSocket, rt: ApiRuntime, caller: ApiKey | None) -> None:
    init = await _await_init(ws)
    try:
        live, spec = spec_for(init, await live_runtimes(ws), rt, interactive=True, stdin=None)
        job_id = await submit(rt, ws.app.state.auth, caller, spec)
    except PistonError as exc:
        raise Closing(4002, "Notified Error", exc.message) from None
    await ws.send_json({"type": "runtime", "language": live.name, "version": live.version})
    feeder = asyncio.create_task(_feed(ws, rt, job_id))
    relay = asyncio.create_task(_relay(ws, rt, job_id))
    finished = False
    try:
        done, _ = await asyncio.wait({feeder, relay}, timeout=rt.settings.job_time_limit_s,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finished = relay in done and relay.exception() is None
        for task in done:
            task.result()  # a Closing or a disconnect from the feeder, or an error of the relay
    finally:
        for task in (feeder, relay):
            task.cancel()
        if not finished:
            await rt.store.cancel(job_id)  # the client left (or broke the protocol): stop its program
    raise Closing(4999, "Job Completed")


@router.websocket("/connect")
async def connect(ws: WebSocket) -> None:
    rt: ApiRuntime = ws.app.state.runtime
    try:
        caller = await _authenticate(ws)
    except Denied:
        return
    await ws.accept()
    try:
        await _session(ws, rt, caller)
    except Closing as closing:
        with contextlib.suppress(Exception):
            if closing.notify:
                await ws.send_json({"type": "error", "message": closing.notify})
            await ws.close(closing.code, closing.reason)
    except WebSocketDisconnect:
        pass


__all__ = ["router"]
