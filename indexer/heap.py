"""Long-lived objects out of the cyclic garbage collector's way.

A full (oldest-generation) collection walks every tracked object. In an API process that holds the query
encoder and a serving model, that walk took 60-100 ms on the 100k-item serving benchmark, five times in an
eight-second run per worker, and it stops every request thread of the process while it runs (the GIL):
those pauses were the API's tail above Elasticsearch's. What is loaded once and kept (the encoder, a
model's id maps and matrices) never becomes garbage, so after loading it the process collects once and
freezes what is alive (gc.freeze): later full collections walk only what came after.
"""
from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def freeze_long_lived(what: str) -> None:
    """Collect what is garbage now, then freeze the rest. What an earlier call froze is thawed first, so a
    model replaced since (a promotion) is freed even if it holds a reference cycle."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    log.info("froze %d long-lived objects after loading %s (%.0f ms)", gc.get_freeze_count(), what,
             (time.perf_counter() - started) * 1000)
