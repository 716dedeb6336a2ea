"""Request and response bodies of the /v1 API that are not the job contract itself (that is models.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cellblock.models import JobResult, JobSpec, JobState
from cellblock.state import WorkerInfo


class JobAccepted(BaseModel):
    id: str = Field(description="The job's id: 32 hex characters.", examples=["4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"])
    state: JobState = Field(description="queued, or the state of the job an idempotency key already named.")
    url: str = Field(description="Where to GET the result.", examples=["/v1/jobs/4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"])


class BatchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobSpec] = Field(min_length=1, description="Up to the server's max_batch_jobs (1000 by default).")


class BatchAccepted(BaseModel):
    id: str
    jobs: list[str] = Field(description="Job ids, in the order of the request.")
    url: str


class BatchStatus(BaseModel):
    id: str
    total: int
    done: bool = Field(description="True when every job has finished (done, failed or cancelled).")
    states: dict[str, int] = Field(description="How many jobs are in each state.")
    verdicts: dict[str, int] = Field(description="How many finished jobs have each verdict.")
    jobs: list[JobResult]


class LanguageInfo(BaseModel):
    name: str
    display_name: str
    version: str | None = Field(description="As reported by the workers' toolchains.")
    aliases: list[str]
    judge0_ids: list[int]
    piston_name: str | None
    compiled: bool
    source_file: str
    workers: int = Field(description="Live workers whose self-test passed for this language.")


class WorkersStatus(BaseModel):
    workers: list[WorkerInfo]
    backlog: dict[str, int] = Field(description="Jobs waiting per language queue.")


class Health(BaseModel):
    status: str
    problems: list[str] = []
