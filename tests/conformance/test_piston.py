"""Piston's per-runtime tests (packages/*/*/test.*) on our languages: the output must contain OK."""

from __future__ import annotations

import pytest

from cellblock.engine import Engine
from tests.conformance import corpus

PLAN = corpus.collect("piston_tests")


@pytest.mark.sandbox
@pytest.mark.parametrize("case", PLAN.applicable(), ids=corpus.case_id)
def test_piston(case: corpus.Case, engine: Engine, request: pytest.FixtureRequest) -> None:
    corpus.run_case(engine, case, request)
