"""The public surface is explicit: a sorted __all__, each name importable, pinned here."""

import cellblock

PINNED = [
    "ApiError", "AsyncClient", "BuiltinChecker", "CellblockError", "Client", "CustomChecker", "InternalError",
    "JobResult", "JobSpec", "JobState", "LimitAboveMaximum", "Limits", "Outcome", "OutputFile", "SandboxFailure",
    "SandboxUnavailable", "Settings", "SourceFile", "StepResult", "TestCase", "TestResult", "UnknownLanguage",
    "UserError", "ValidationFailed", "Verdict",
]  # fmt: skip


def test_all_is_sorted_and_pinned() -> None:
    assert cellblock.__all__ == sorted(cellblock.__all__)
    assert cellblock.__all__ == PINNED


def test_every_exported_name_exists() -> None:
    for name in cellblock.__all__:
        assert getattr(cellblock, name) is not None
