"""Collected last: print per corpus file applicable / passed / not applicable with the time taken, and every
not-applicable case with its reason. Fails if any case run in this session failed.
"""

from __future__ import annotations

import pytest

from tests.conformance import corpus

PLANS = [corpus.collect(name) for name in corpus.CORPORA]


def test_summary(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    ran = corpus.outcomes(request.config)
    lines = corpus.summary_lines(PLANS, ran)
    total = sum(seconds for _, seconds in ran.values())
    with capsys.disabled():
        print("\n\nconformance summary (" + f"{len(ran)} cases run, {total:.1f} s in the sandbox)")
        print("\n".join(lines))
    failed = sorted(case_id for case_id, (ok, _) in ran.items() if not ok)
    assert not failed, f"conformance cases failed: {failed}"
