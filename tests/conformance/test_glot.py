"""glot's hello-world examples: no error, empty stderr, and stdout (right-trimmed, unquoted, lowercased) is
``hello world!``.
"""

from __future__ import annotations

import pytest

from cellblock.engine import Engine
from tests.conformance import corpus

PLAN = corpus.collect("glot_examples")


@pytest.mark.sandbox
@pytest.mark.parametrize("case", PLAN.applicable(), ids=corpus.case_id)
def test_glot_example(case: corpus.Case, engine: Engine, request: pytest.FixtureRequest) -> None:
    corpus.run_case(engine, case, request)
