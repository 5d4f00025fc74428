"""The latency percentile the offline tools share (indexer.telemetry.percentile)."""
from __future__ import annotations

import math

import pytest

from indexer.telemetry import percentile


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([float(x) for x in range(1, 101)], 95) == pytest.approx(95.05)
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0 and percentile([3.0, 1.0, 2.0], 100) == 3.0


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 99))
