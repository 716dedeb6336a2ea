"""Reading a Piston request body the way its real clients send it.

Upstream Piston answers 415 unless the body is ``application/json``; its own PyPI and npm clients send JSON
as ``text/plain`` (node-fetch with a string body), with no Content-Type at all (pistonpy), or as a form
(pistonapi: ``requests.post(url, payload)``, so ``files=<code>`` and repeated ``args=…``). We accept all
three: JSON under any JSON-ish or missing type, and forms (flat keys, repeated keys, and the bracket keys
``files[0][content]`` that Express's extended parser reads). Anything else is 415, as upstream; a body that
does not parse is 400 with a message, never a stack trace (upstream sends its stack).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

JSON_TYPES = ("application/json", "text/plain", "")
FORM_TYPE = "application/x-www-form-urlencoded"
NUMERIC_FIELDS = ("compile_timeout", "run_timeout", "compile_cpu_time", "run_cpu_time", "compile_memory_limit",
                  "run_memory_limit")  # fmt: skip
_BRACKETS = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
MAX_FORM_INDEX = 1000  # files[N] / args[N] above this are refused, not allocated


class PistonError(Exception):
    """An error answered in Piston's shape: the status code and ``{"message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request) -> Any:
    """The body as Piston would see it after its body parsers: a JSON value or a dict from a form."""
    kind = media_type(request)
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PistonError(400, "the request body is not UTF-8") from None
    if kind == FORM_TYPE:
        return parse_form(text)
    if kind in JSON_TYPES or kind.endswith("+json"):
        try:
            return json.loads(text)
        except ValueError:
            raise PistonError(400, "the request body is not valid JSON") from None
    raise PistonError(415, "requests must be of type application/json")


def _put(target: dict[str, Any], key: str, value: str) -> None:
    """One form pair into `target`: flat keys collect repeats into a list; bracket keys build lists/dicts."""
    match = _BRACKETS.match(key)
    if not match:
        return  # a malformed key is ignored, as qs does
    name, path = match.group(1), re.findall(r"\[([^\[\]]*)\]", match.group(2))
    if not path:
        previous = target.get(name)
        target[name] = value if previous is None else [*previous, value] if isinstance(previous, list) else [
            previous, value]  # fmt: skip
        return
    node: Any = target.setdefault(name, {})
    for index, given in enumerate(path):
        last = index == len(path) - 1
        if not isinstance(node, dict):
            return  # 'files=x&files[0]=y': keep the first shape
        part = given or str(len(node))  # 'args[]=a&args[]=b' appends
        if part.isdigit() and int(part) > MAX_FORM_INDEX:
            raise PistonError(400, f"form key {key!r}: index above {MAX_FORM_INDEX}")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})


def _listify(value: Any) -> Any:
    """Dicts whose keys are all indices become lists, in index order (Express's qs does the same)."""
    if isinstance(value, dict):
        items = {k: _listify(v) for k, v in value.items()}
        if items and all(k.isdigit() for k in items):
            return [items[k] for k in sorted(items, key=int)]
        return items
    return value


def parse_form(text: str) -> dict[str, Any]:
    """A form body as the dict a JSON client would have sent: files as objects, args as a list, numbers."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        _put(out, key, value)
    out = {k: _listify(v) for k, v in out.items()}
    files = out.get("files")
    if isinstance(files, (str, dict)):
        files = [files]
    if isinstance(files, list):
        out["files"] = [{"content": f} if isinstance(f, str) else f for f in files]
    if isinstance(out.get("args"), str):
        out["args"] = [out["args"]]
    for name in NUMERIC_FIELDS:
        number = out.get(name)
        if isinstance(number, str) and re.fullmatch(r"-?\d+(\.\d+)?", number):
            out[name] = float(number) if "." in number else int(number)
    return out
