"""worker.run_bundle with the job runner and the store faked: which jobs of a bundle go back to the queue, when."""

from __future__ import annotations

from typing import Any

import pytest

from cellblock import worker


class FakePipeline:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def __enter__(self) -> FakePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def hgetall(self, key: str) -> None:
        self.keys.append(key)

    def execute(self) -> list[dict[str, str]]:
        return [{"id": key.rsplit(":", 1)[1], "state": "queued"} for key in self.keys]


class FakeRuntime:
    """What run_bundle touches: the store (one pipeline read) and the publisher (hand-backs)."""

    def __init__(self) -> None:
        self.published: list[tuple[list[str], str]] = []
        self.redis = self

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline()

    def dispatcher(self) -> FakeRuntime:
        return self

    def publish(self, job_ids: list[str], queue: str) -> None:
        self.published.append((list(job_ids), queue))


def jobs_that(monkeypatch: pytest.MonkeyPatch, behave: dict[str, Any]) -> list[str]:
    """Fake run_job: records the jobs run; `behave[job]` is an exception to raise or seconds to let pass."""
    ran: list[str] = []
    clock = [0.0]

    def run_job(runtime: Any, job_id: str, fields: dict[str, str] | None) -> None:
        assert fields is not None and fields["id"] == job_id  # the bundle's one read, handed to each job
        ran.append(job_id)
        what = behave.get(job_id, 0.01)
        if isinstance(what, BaseException):
            raise what
        clock[0] += what

    monkeypatch.setattr(worker, "run_job", run_job)
    monkeypatch.setattr(worker.time, "monotonic", lambda: clock[0])
    return ran


def test_short_jobs_all_run_in_the_slot_that_took_them(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = jobs_that(monkeypatch, {})
    runtime = FakeRuntime()
    worker.run_bundle(runtime, ["a", "b", "c", "d"], "lang.python3")  # type: ignore[arg-type]
    assert ran == ["a", "b", "c", "d"] and runtime.published == []


def test_the_rest_goes_back_once_the_bundle_was_held_long_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = jobs_that(monkeypatch, {"b": worker.BUNDLE_HANDBACK_S})
    runtime = FakeRuntime()
    worker.run_bundle(runtime, ["a", "b", "c", "d"], "lang.python3")  # type: ignore[arg-type]
    assert ran == ["a", "b"] and runtime.published == [(["c", "d"], "lang.python3")]


def test_a_failure_of_ours_hands_the_rest_back_and_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = jobs_that(monkeypatch, {"b": RuntimeError("store unreachable")})
    runtime = FakeRuntime()
    with pytest.raises(RuntimeError):
        worker.run_bundle(runtime, ["a", "b", "c"], "lang.c")  # type: ignore[arg-type]
    assert ran == ["a", "b"] and runtime.published == [(["c"], "lang.c")]


@pytest.mark.parametrize("raised", [worker.ToolchainMissing("ruby", "b"), SystemExit(1)])
def test_a_requeued_message_hands_nothing_back(monkeypatch: pytest.MonkeyPatch, raised: BaseException) -> None:
    """A vanished toolchain (Reject, requeue) or a process that exits (a lost worker): the whole message comes
    again, so handing the rest back too would queue those jobs twice."""
    jobs_that(monkeypatch, {"b": raised})
    runtime = FakeRuntime()
    with pytest.raises(type(raised)):
        worker.run_bundle(runtime, ["a", "b", "c"], "lang.ruby")  # type: ignore[arg-type]
    assert runtime.published == []
