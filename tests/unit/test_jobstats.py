"""cellblock.observability.jobstats: what a finished job adds to the cluster's metrics hash, and how the hash
reads back as Prometheus families (cumulative buckets, sums, bounded labels)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.core import Metric

from cellblock import models
from cellblock.models import JobResult, JobState, StepResult, Verdict
from cellblock.observability import jobstats
from cellblock.state import METRICS_KEY


class Pipe:
    """The two commands `record` queues, applied to a dict the way Redis would."""

    def __init__(self) -> None:
        self.hash: dict[str, float] = {}

    def hincrby(self, key: str, field: str, amount: int) -> None:
        assert key == METRICS_KEY
        self.hash[field] = self.hash.get(field, 0) + amount

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        assert key == METRICS_KEY
        self.hash[field] = self.hash.get(field, 0.0) + amount

    def families(self) -> dict[str, Metric]:
        return {f.name: f for f in jobstats.families({k: str(v) for k, v in self.hash.items()})}


def result(language: str, queued_s: float, ran_s: float, verdict: Verdict | None = Verdict.ACCEPTED) -> JobResult:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    started = created + timedelta(seconds=queued_s)
    return JobResult(id="a" * 32, state=JobState.DONE if verdict else JobState.CANCELLED, verdict=verdict,
                     language=language, created_at=created, started_at=started,
                     finished_at=started + timedelta(seconds=ran_s))  # fmt: skip


def samples(family: Metric) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_jobs_are_counted_by_canonical_language_state_and_verdict() -> None:
    pipe = Pipe()
    for language in ("python3", "py", "Python"):  # aliases, as a job that never ran keeps them
        jobstats.record(pipe, jobstats.sample_of(result(language, 0.1, 0.2)))
    jobstats.record(pipe, jobstats.sample_of(result("c", 0.1, 0.2, Verdict.COMPILATION_ERROR)))
    jobstats.record(pipe, jobstats.sample_of(result("python3", 0.1, 0.2, None)))
    jobstats.record(pipe, jobstats.sample_of(result("no-such-language", 0.1, 0.2)))
    jobstats.record(pipe, jobstats.JobSample("c", "done", "accepted", host="h1"))
    jobstats.record(pipe, jobstats.JobSample("c", "done", "accepted", host="h1"))
    jobs = samples(pipe.families()["cellblock_jobs"])
    assert samples(pipe.families()["cellblock_host_jobs"]) == {("cellblock_host_jobs_total", (("host", "h1"),)): 2}
    assert jobs == {
        ("cellblock_jobs_total", (("language", "python3"), ("state", "done"), ("verdict", "accepted"))): 3,
        ("cellblock_jobs_total", (("language", "c"), ("state", "done"), ("verdict", "compilation_error"))): 1,
        ("cellblock_jobs_total", (("language", "c"), ("state", "done"), ("verdict", "accepted"))): 2,
        ("cellblock_jobs_total", (("language", "python3"), ("state", "cancelled"), ("verdict", "none"))): 1,
        ("cellblock_jobs_total", (("language", "unknown"), ("state", "done"), ("verdict", "accepted"))): 1,
    }


def test_histograms_read_back_cumulative_with_their_sums() -> None:
    pipe = Pipe()
    for queued in (0.004, 0.005, 0.3, 1000.0):  # on a bound counts in that bucket (le: less or equal)
        jobstats.record(pipe, jobstats.sample_of(result("c", queued, 0.02), [("compile", 0.006), ("run", 0.004)]))
    queue = samples(pipe.families()["cellblock_job_queue_seconds"])
    c = (("language", "c"),)
    assert queue[("cellblock_job_queue_seconds_bucket", (*c, ("le", "0.005")))] == 2
    assert queue[("cellblock_job_queue_seconds_bucket", (*c, ("le", "0.25")))] == 2
    assert queue[("cellblock_job_queue_seconds_bucket", (*c, ("le", "0.5")))] == 3
    assert queue[("cellblock_job_queue_seconds_bucket", (*c, ("le", "300.0")))] == 3
    assert queue[("cellblock_job_queue_seconds_bucket", (*c, ("le", "+Inf")))] == 4
    assert queue[("cellblock_job_queue_seconds_count", c)] == 4
    assert abs(queue[("cellblock_job_queue_seconds_sum", c)] - 1000.309) < 1e-9
    overhead = samples(pipe.families()["cellblock_sandbox_overhead_seconds"])
    assert overhead[("cellblock_sandbox_overhead_seconds_count", (*c, ("step", "compile")))] == 4
    assert overhead[("cellblock_sandbox_overhead_seconds_count", (*c, ("step", "run")))] == 4
    assert overhead[("cellblock_sandbox_overhead_seconds_bucket", (*c, ("le", "0.005"), ("step", "run")))] == 4
    run = samples(pipe.families()["cellblock_job_run_seconds"])
    assert run[("cellblock_job_run_seconds_count", c)] == 4


def test_a_job_that_never_started_is_counted_without_times() -> None:
    pipe = Pipe()
    never = result("python3", 0, 0, None).model_copy(update={"started_at": None, "finished_at": None})
    jobstats.record(pipe, jobstats.sample_of(never))
    families = pipe.families()
    assert sum(s.value for s in families["cellblock_jobs"].samples) == 1
    assert families["cellblock_job_queue_seconds"].samples == []


def test_unreadable_fields_are_skipped() -> None:
    families = jobstats.families({"not json": "1", '["cellblock_jobs",["x"],"count"]': "2", "[1,2]": "x"})
    assert [f.samples for f in families if f.name == "cellblock_jobs"] == [[]]


def test_each_step_of_a_finished_job_is_counted_by_its_isolation() -> None:
    pipe = Pipe()
    step = {"outcome": "ok", "cpu_time_s": 0.01, "wall_time_s": 0.01, "memory_kib": 1}
    ran = result("c", 0.1, 0.2).model_copy(update={
        "compile": StepResult(**step, isolation="warm"),
        "tests": [models.TestResult(id="1", verdict=Verdict.ACCEPTED, run=StepResult(**step, isolation="warm")),
                  models.TestResult(id="2", verdict=Verdict.ACCEPTED, run=StepResult(**step, isolation="fresh")),
                  models.TestResult(id="3", verdict=Verdict.ACCEPTED, run=None)],  # skipped: no step, not counted
    })  # fmt: skip
    jobstats.record(pipe, jobstats.sample_of(ran))
    jobstats.record(pipe, jobstats.sample_of(result("python3", 0.1, 0.2, None)))  # cancelled while queued: no step
    jobstats.record(pipe, jobstats.JobSample("c", "done", "accepted", isolations=["prewarmed", "bogus"]))
    assert samples(pipe.families()["cellblock_runs"]) == {
        ("cellblock_runs_total", (("isolation", "warm"),)): 2,
        ("cellblock_runs_total", (("isolation", "fresh"),)): 1,
        ("cellblock_runs_total", (("isolation", "prewarmed"),)): 1,
        ("cellblock_runs_total", (("isolation", "unknown"),)): 1,  # the label set stays closed
    }
    assert "cellblock_runs" in jobstats.NAMES
