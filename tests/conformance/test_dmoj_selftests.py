"""DMOJ's executor self-tests: echo stdin; stdout.strip() must equal it and stderr must be empty.

The executor's language standard is applied (DMOJ's C is ``-std=c99``, CPP17 is ``-std=c++17``…): several
programs define ``main()`` only under the right ``__STDC_VERSION__``/``__cplusplus``, so they check that too.
"""

from __future__ import annotations

import pytest

from cellblock.engine import Engine
from tests.conformance import corpus

PLAN = corpus.collect("dmoj_selftests")


@pytest.mark.sandbox
@pytest.mark.parametrize("case", PLAN.applicable(), ids=corpus.case_id)
def test_dmoj_selftest(case: corpus.Case, engine: Engine, request: pytest.FixtureRequest) -> None:
    corpus.run_case(engine, case, request)
