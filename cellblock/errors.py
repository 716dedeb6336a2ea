"""Cellblock's exception tree.

Two families, kept apart so that every caller can tell *who* is at fault::

    CellblockError
     ├── UserError                 the request is wrong; the user can fix it (HTTP 4xx, CLI exit 2)
     │    ├── ValidationFailed     a field has a bad value (carries `field`)
     │    ├── UnknownLanguage      no such language (lists the known ones and the closest match)
     │    └── LimitAboveMaximum    a requested limit is above the server's configured maximum
     └── InternalError             our fault or the host's; never caused by the program under test
          ├── SandboxUnavailable   a prerequisite is missing: we refuse to run code (doctor says how to fix)
          └── SandboxFailure       a run could not be set up or cleaned up

A program that misbehaves inside the sandbox is *not* an exception: it is a verdict in the result.
"""

from __future__ import annotations


class CellblockError(Exception):
    """Base of every error Cellblock raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        """The wire shape: ``{"code", "message", "field"}``."""
        return {"code": self.code, "message": self.message, "field": self.field}


class UserError(CellblockError):
    """The request is wrong; nothing ran."""

    code = "bad_request"


class ValidationFailed(UserError):
    code = "validation_failed"


class UnknownLanguage(UserError):
    code = "unknown_language"


class LimitAboveMaximum(UserError):
    code = "limit_above_maximum"


class InternalError(CellblockError):
    """Something on our side failed; the program under test is not to blame."""

    code = "internal_error"


class SandboxUnavailable(InternalError):
    """A sandbox prerequisite is missing. Cellblock refuses to execute code without it."""

    code = "sandbox_unavailable"


class SandboxFailure(InternalError):
    code = "sandbox_failure"
