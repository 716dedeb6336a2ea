"""Piston v2's wire shapes, as pydantic models: they document /api/v2 in the OpenAPI page and build the answers.

Requests are not validated by these models (FastAPI would answer 422 in our shape); `convert.py` checks
them field by field in Piston's order, with Piston's messages, and these models only describe them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PistonFile(BaseModel):
    name: str | None = Field(None, description="Path in the box; default file<i>.code.", examples=["main.py"])
    content: str = Field(description="The file's content, in `encoding`.", examples=["print(input())"])
    encoding: Literal["utf8", "base64", "hex"] = Field("utf8", description="How `content` is encoded.",
                                                      examples=["utf8"])  # fmt: skip


class PistonExecute(BaseModel):
    """POST /api/v2/execute (and the WebSocket's `init`). JSON, text/plain JSON, or form-encoded."""

    language: str = Field(description="Piston language name or alias.", examples=["python"])
    version: str = Field(description="SemVer selector matched against the real toolchain version.",
                         examples=["3.x"])  # fmt: skip
    files: list[PistonFile] = Field(description="files[0] is the main file.",
                                    examples=[[{"name": "main.py", "content": "print(input())"}]])  # fmt: skip
    stdin: str = Field("", description="Standard input; a newline is appended if missing.", examples=["hi"])
    args: list[str] = Field([], description="Command-line arguments.", examples=[["1", "2"]])
    compile_timeout: int = Field(10000, description="Compile wall time, ms.", examples=[10000])
    run_timeout: int = Field(3000, description="Run wall time, ms.", examples=[3000])
    compile_cpu_time: int = Field(10000, description="Compile CPU time, ms.", examples=[10000])
    run_cpu_time: int = Field(3000, description="Run CPU time, ms.", examples=[3000])
    compile_memory_limit: int = Field(-1, description="Compile memory, bytes; -1: the server's default.",
                                      examples=[-1])  # fmt: skip
    run_memory_limit: int = Field(-1, description="Run memory, bytes; -1: the server's default.", examples=[-1])


class PistonStage(BaseModel):
    """One stage (compile or run)."""

    stdout: str = Field(description="Standard output.", examples=["hi\n"])
    stderr: str = Field(description="Standard error.", examples=[""])
    output: str = Field(description="stdout and stderr interleaved as produced (10 ms granularity).",
                        examples=["hi\n"])  # fmt: skip
    code: int | None = Field(description="Exit code; null when killed by a signal.", examples=[0])
    signal: str | None = Field(description="Signal name when killed by one.", examples=[None])
    message: str | None = Field(description="Why it ended, in words.", examples=[None])
    status: Literal["RE", "SG", "TO", "OL", "EL", "XX"] | None = Field(
        description="RE runtime error, SG signal (or memory limit), TO timeout, OL/EL stdout/stderr limit, "
        "XX internal; null when it exited 0.", examples=[None])  # fmt: skip
    cpu_time: int = Field(description="CPU time of every process, ms.", examples=[12])
    wall_time: int = Field(description="Wall time, ms.", examples=[15])
    memory: int = Field(description="Peak memory, bytes.", examples=[3170304])


class PistonResult(BaseModel):
    language: str = Field(description="The runtime's Piston name.", examples=["python"])
    version: str = Field(description="The real toolchain version that ran it.", examples=["3.11.2"])
    run: PistonStage = Field(description="The run; a copy of `compile` when compilation failed.")
    compile: PistonStage | None = Field(None, description="Only for compiled languages.")


class PistonRuntime(BaseModel):
    language: str = Field(description="Piston language name.", examples=["python"])
    version: str = Field(description="The toolchain's real version on live workers.", examples=["3.11.2"])
    aliases: list[str] = Field(description="Other names accepted as `language`.", examples=[["py", "python3"]])


class PistonMessage(BaseModel):
    """Every Piston error: a status code and one message."""

    message: str = Field(description="What is wrong.", examples=["python-9.x runtime is unknown"])
