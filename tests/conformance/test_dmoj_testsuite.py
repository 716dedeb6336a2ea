"""DMOJ's end-to-end testsuite (aplusb, helloworld): each submission is compiled once and run on every test
case with its time and memory limits and the token checker; the job's verdict must be the expected one
(AC, WA, CE, TLE, MLE, OLE; RTE and IR are our runtime_error). DMOJ's feedback texts are its own messages
and are not compared; limits in KB become whole MiB (cases where that would matter are listed as not applicable).
"""

from __future__ import annotations

import pytest

from cellblock.engine import Engine
from tests.conformance import corpus

PLAN = corpus.collect("dmoj_testsuite")


@pytest.mark.sandbox
@pytest.mark.parametrize("case", PLAN.applicable(), ids=corpus.case_id)
def test_dmoj_submission(case: corpus.Case, engine: Engine, request: pytest.FixtureRequest) -> None:
    corpus.run_case(engine, case, request)
