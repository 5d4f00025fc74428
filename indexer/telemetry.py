"""Read-path metrics shared by every process that ranks: backend call latency and response-cache lookups;
and the one latency percentile the offline tools report."""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from prometheus_client import Counter, Histogram

BACKEND_LATENCY = Histogram("hybridrec_backend_call_seconds", "Elasticsearch and Redis call latency",
                            ["backend", "operation"],
                            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
CACHE = Counter("hybridrec_reco_cache_total", "recommendation cache lookups", ["result"])


@contextmanager
def timed(backend: str, operation: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        BACKEND_LATENCY.labels(backend, operation).observe(time.perf_counter() - started)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100, linear interpolation between the nearest ranks); NaN for no values, so
    that a gap shows in a report instead of a made-up number."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
