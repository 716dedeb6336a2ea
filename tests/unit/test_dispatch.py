"""dispatch.bundle_size: how many jobs of a batch travel in one message."""

from __future__ import annotations

import pytest

from cellblock.dispatch import BUNDLES_PER_SLOT, bundle_size


@pytest.mark.parametrize(
    ("jobs", "slots", "most", "size"),
    [
        (192, 2, 8, 8),  # a big batch: capped by the setting
        (40, 2, 8, 8),  # 40 / (2 per slot × 2 slots) = 10 → 8
        (16, 2, 8, 4),  # every slot gets two bundles
        (17, 2, 8, 5),  # rounded up: 4 bundles of ≤ 5 (never a fifth tiny one)
        (8, 1, 8, 4),
        (3, 2, 8, 1),  # fewer jobs than bundles wanted: one job per message
        (1, 2, 8, 1),
        (500, 0, 8, 1),  # no live slot known: no bundles
        (500, 4, 1, 1),  # bundle_max_jobs = 1 turns bundles off
    ],
)
def test_bundle_size(jobs: int, slots: int, most: int, size: int) -> None:
    assert BUNDLES_PER_SLOT == 2
    assert bundle_size(jobs, slots, most) == size
