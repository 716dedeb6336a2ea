"""Cellblock: run untrusted code in many languages inside a Linux sandbox.

The public surface is below; everything else is internal and may change.
"""

from importlib.metadata import PackageNotFoundError, version

from cellblock.client import ApiError, AsyncClient, Client
from cellblock.config import Settings
from cellblock.errors import (
    CellblockError,
    InternalError,
    LimitAboveMaximum,
    SandboxFailure,
    SandboxUnavailable,
    UnknownLanguage,
    UserError,
    ValidationFailed,
)
from cellblock.models import (
    BuiltinChecker,
    CustomChecker,
    JobResult,
    JobSpec,
    JobState,
    Limits,
    Outcome,
    OutputFile,
    SourceFile,
    StepResult,
    TestCase,
    TestResult,
    Verdict,
)

try:
    __version__ = version("cellblock")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "ApiError",
    "AsyncClient",
    "BuiltinChecker",
    "CellblockError",
    "Client",
    "CustomChecker",
    "InternalError",
    "JobResult",
    "JobSpec",
    "JobState",
    "LimitAboveMaximum",
    "Limits",
    "Outcome",
    "OutputFile",
    "SandboxFailure",
    "SandboxUnavailable",
    "Settings",
    "SourceFile",
    "StepResult",
    "TestCase",
    "TestResult",
    "UnknownLanguage",
    "UserError",
    "ValidationFailed",
    "Verdict",
]
