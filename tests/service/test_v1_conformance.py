"""The conformance corpus through Cellblock's own API, /v1, as the Judge0 and Piston modules run theirs through
their facades: glot's hello worlds and DMOJ's self-tests for every language we register, in one batch.

The plan and the judges are the corpus runner's (`tests/conformance/corpus.py`): each case's JobSpec is sent as
JSON, the JobResult comes back through the API (worker, job store, sealing, serialization), and is judged the
corpus file's own way. tests/conformance runs the same cases straight through the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cellblock.models import JobResult
from tests.conformance import corpus
from tests.service.conftest import Service
from tests.service.test_api_batches import wait_for_batch

pytestmark = pytest.mark.sandbox

CASES = corpus.collect("glot_examples").applicable() + corpus.collect("dmoj_selftests").applicable()


@pytest.fixture(scope="module")
def results(service: Service) -> Iterator[dict[str, dict[str, Any]]]:
    jobs = [case.spec.model_dump(mode="json", exclude_none=True) for case in CASES if case.spec is not None]
    with service.client(timeout=60) as api:
        accepted = api.post("/v1/batches", json={"jobs": jobs})
        assert accepted.status_code == 202, accepted.text
        status = wait_for_batch(api, accepted.json()["id"], timeout=600)
        yield {case.id: job for case, job in zip(CASES, status["jobs"], strict=True)}


@pytest.mark.parametrize("case", CASES, ids=corpus.case_id)
def test_corpus_case_through_the_v1_api(case: corpus.Case, results: dict[str, dict[str, Any]]) -> None:
    assert case.judge is not None
    result = JobResult.model_validate(results[case.id])
    assert result.language == case.language
    problem = case.judge(result)
    assert problem is None, f"{case.id} on {case.language}: {problem}\n  {corpus.describe(result)}"
