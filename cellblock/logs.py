"""Logging for the service processes: one format (text or JSON lines), and the request id on every line.

Theory of operation. Each entry point (`cellblock serve`, `worker`, `webhooks`) calls `configure` once, before
anything logs: one handler on the root logger, writing to stderr, with `TextFormatter` or `JsonFormatter`
(`CELLBLOCK_LOG_FORMAT` / `--log-format`). The `cellblock` loggers log at `CELLBLOCK_LOG_LEVEL`; every other
library's at WARNING, so Celery, kombu and uvicorn say only what matters.

The request id. The API takes a client's ``X-Request-ID`` (when it is a plain token) or makes one, answers
with it, and sets `REQUEST_ID` for the request's task; the job store keeps it in the job's hash, in clear (it
is no user data). The worker sets `REQUEST_ID` and `JOB_ID` around each job (`job_context`), so the job's
lines, the sandbox's runs among them, carry both. `ContextFilter` copies them onto every record, whatever
module logs it.

Never user data. No line may hold a program's source, stdin, output, or a checker's output: log ids, names,
states, verdicts, sizes and times only. tests/service/test_logs.py runs jobs full of a unique marker and greps
every log of the service for it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import re
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
REQUEST_ID: ContextVar[str | None] = ContextVar("cellblock_request_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("cellblock_job_id", default=None)
REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept only when it is a plain token: nothing that could forge a log line or smuggle data.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_LIBRARIES = ("celery", "kombu", "amqp", "uvicorn", "uvicorn.error", "httpx", "httpcore", "asyncio")


def request_id_from(value: str | None) -> str:
    """The client's request id when it is acceptable, else a new one (32 hex)."""
    if value and _CLIENT_ID.match(value):
        return value
    return uuid.uuid4().hex


@contextlib.contextmanager
def job_context(job_id: str, request_id: str | None) -> Iterator[None]:
    """Within: every log line of this thread names the job and the request that submitted it."""
    job_token, request_token = JOB_ID.set(job_id), REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        JOB_ID.reset(job_token)
        REQUEST_ID.reset(request_token)


class ContextFilter(logging.Filter):
    """Puts the current request id and job id on each record (None when outside a request or job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        if not hasattr(record, "job_id"):
            record.job_id = JOB_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC, ISO 8601), level, logger, message, request_id, job_id, process, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key in ("request_id", "job_id"):
            value = getattr(record, key, None)
            if value:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO cellblock.worker [rid=… job=…] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        pairs = (("rid", getattr(record, "request_id", None)), ("job", getattr(record, "job_id", None)))
        ids = [f"{short}={value}" for short, value in pairs if value]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


STACK_DUMP_SIGNAL = signal.SIGUSR2  # SIGUSR1 is Celery's (the main process's tracebacks, pool soft time limits)


def dump_stacks_on_signal() -> None:
    """`kill -USR2 PID` writes every thread's Python stack to that process's stderr, i.e. its log: where a stuck
    worker, pool process or API waits, without stopping it. Frames name files, lines and functions, never values
    (no user data). Plain text, also under the JSON log format: it is a diagnosis, not a log line."""
    stream = sys.__stderr__
    if stream is not None:
        with contextlib.suppress(ValueError, OSError, RuntimeError, AttributeError):  # no usable fd 2
            faulthandler.register(STACK_DUMP_SIGNAL, file=stream, all_threads=True)


def configure(log_format: LogFormat = "text", level: str = "INFO") -> None:
    """Route every logger to one stderr handler in `log_format`. Safe to call again (it replaces the handler).
    Also arms the stack dump on SIGUSR2 (`dump_stacks_on_signal`): every service process calls this once."""
    dump_stacks_on_signal()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # Python warnings (e.g. Celery's) become log lines in the same format
    logging.getLogger("cellblock").setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def sayer(log_format: LogFormat, echo: Callable[[str], None]) -> Callable[[str], None]:
    """What a command tells its operator: printed as is in text mode, a JSON log line in JSON mode."""
    if log_format != "json":
        return echo
    logger = logging.getLogger("cellblock.service")
    return lambda message: logger.info("%s", message)
