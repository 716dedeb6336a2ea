"""Request and response bodies of the /v1 API that are not the job contract itself (that is models.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cellblock.models import JobResult, JobSpec, JobState
from cellblock.state import WorkerInfo


class JobAccepted(BaseModel):
    id: str = Field(description="The job's id: 32 hex characters.", examples=["4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"])
    state: JobState = Field(
        description="queued, or the state of the job an idempotency key already named.", examples=["queued"]
    )
    url: str = Field(description="Where to GET the result.", examples=["/v1/jobs/4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"])


class BatchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobs: list[JobSpec] = Field(
        min_length=1,
        description="Up to the server's max_batch_jobs (1000 by default).",
        examples=[[{"language": "python3", "files": [{"name": "main.py", "content": "print(1)"}]}]],
    )


class BatchAccepted(BaseModel):
    id: str = Field(description="The batch's id.", examples=["9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"])
    jobs: list[str] = Field(description="Job ids, in the order of the request.",
                            examples=[["4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"]])  # fmt: skip
    url: str = Field(description="Where to GET the batch.", examples=["/v1/batches/9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"])


class BatchStatus(BaseModel):
    id: str = Field(description="The batch's id.", examples=["9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"])
    total: int = Field(description="Jobs in the batch.", examples=[100])
    done: bool = Field(description="True when every job has finished (done, failed or cancelled).", examples=[False])
    states: dict[str, int] = Field(
        description="How many jobs are in each state.", examples=[{"done": 98, "running": 2}]
    )
    verdicts: dict[str, int] = Field(description="How many finished jobs have each verdict.",
                                     examples=[{"accepted": 97, "wrong_answer": 1}])  # fmt: skip
    jobs: list[JobResult] = Field(description="Every job's state or result, in the order of the request.",
                                  examples=[[]])  # fmt: skip


class LanguageInfo(BaseModel):
    name: str = Field(description="Canonical name, to use as `language`.", examples=["python3"])
    display_name: str = Field(description="For people.", examples=["Python 3"])
    version: str | None = Field(description="As reported by the workers' toolchains.", examples=["3.11.2"])
    aliases: list[str] = Field(description="Other names accepted as `language`.", examples=[["py", "python"]])
    judge0_ids: list[int] = Field(description="Judge0 CE language ids that map here.", examples=[[71]])
    piston_name: str | None = Field(description="Piston's name for it.", examples=["python"])
    compiled: bool = Field(description="It has a compile step.", examples=[False])
    source_file: str = Field(description="What the main file is saved as.", examples=["main.py"])
    workers: int = Field(description="Live workers whose self-test passed for this language.", examples=[2])


class WorkersStatus(BaseModel):
    workers: list[WorkerInfo] = Field(description="Every live worker.", examples=[[]])
    backlog: dict[str, int] = Field(description="Jobs waiting per language queue.", examples=[{"lang.python3": 3}])


class Health(BaseModel):
    status: str = Field(description="ok / ready / not ready.", examples=["ready"])
    problems: list[str] = Field([], description="What keeps it from being ready.", examples=[["no live worker"]])
