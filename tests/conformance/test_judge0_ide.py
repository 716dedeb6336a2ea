"""Judge0 IDE sample programs: Accepted under Judge0's rule (each line right-stripped, then the whole text).

A sample written for another flavour of one of our languages ("C (GCC 7.4.0)", "C++ (Clang 7.0.1)") runs on it.
"""

from __future__ import annotations

import pytest

from cellblock.engine import Engine
from tests.conformance import corpus

PLAN = corpus.collect("judge0_ide_samples")


@pytest.mark.sandbox
@pytest.mark.parametrize("case", PLAN.applicable(), ids=corpus.case_id)
def test_judge0_sample(case: corpus.Case, engine: Engine, request: pytest.FixtureRequest) -> None:
    corpus.run_case(engine, case, request)
