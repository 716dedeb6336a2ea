"""Every applicable Judge0 IDE sample (the shared conformance corpus) through the Judge0 API, not only /v1.

Applicability is the corpus plan's (`tests/conformance/corpus.py`): a sample maps to one of our languages by its
Judge0 id or by flavour. Each is sent as a Judge0 client would: its own language id when we answer to it, else
the CE id of the language it maps to (e.g. Judge0 Cloud's newer ids); all in one batch, then each is polled.
The sample passes on status 3 (Accepted: Judge0's output comparison against its expected output).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cellblock.api.judge0 import catalog
from cellblock.languages.registry import Registry
from tests.conformance import corpus
from tests.conftest import conformance_dir
from tests.service.conftest import Service

pytestmark = pytest.mark.sandbox

PLAN = corpus.collect("judge0_ide_samples")
LIMITS = {"cpu_time_limit": 5, "wall_time_limit": 10}  # the corpus runner's RUN_LIMITS


def submission(sample: dict[str, Any], language: str, registry: Registry) -> dict[str, Any]:
    language_id = sample["language_id"]
    if catalog.language_of(registry, language_id) is None:
        language_id = registry.get(language).judge0_ids[0]
    return {"source_code": sample["source"], "language_id": language_id, "stdin": sample["stdin"],
            "expected_output": sample["expected_output"], "compiler_options": sample["compiler_options"],
            **LIMITS}  # fmt: skip


@pytest.fixture(scope="module")
def tokens(service: Service) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    registry = Registry.load()
    samples = {c["id"]: c for c in corpus.load(conformance_dir(), "judge0_ide_samples")["cases"]}
    cases = PLAN.applicable()
    body = {"submissions": [submission(samples[c.id], c.language or "", registry) for c in cases]}
    with httpx.Client(base_url=service.base_url + "/judge0", timeout=60) as j0:
        created = j0.post("/submissions/batch", json=body)
        assert created.status_code == 201, created.text
        rows = created.json()
        assert all("token" in row for row in rows), rows
        yield j0, {case.id: row["token"] for case, row in zip(cases, rows, strict=True)}


@pytest.mark.parametrize("case", PLAN.applicable(), ids=corpus.case_id)
def test_judge0_sample_through_the_judge0_api(case: corpus.Case, tokens: tuple[httpx.Client, dict[str, str]]) -> None:
    j0, by_case = tokens
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = j0.get(f"/submissions/{by_case[case.id]}", params={"fields": "status,stdout,stderr,compile_output,"
                                                                             "message,language_id"}).json()  # fmt: skip
        if body["status"]["id"] > 2:
            break
        time.sleep(0.1)
    assert body["status"] == {"id": 3, "description": "Accepted"}, body
