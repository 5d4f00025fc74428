"""freeze_long_lived: what is alive is frozen, garbage is not, and a later call frees what was dropped."""
from __future__ import annotations

import gc
import weakref

from indexer.heap import freeze_long_lived


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_alive_objects_are_frozen_and_dropped_ones_freed_by_the_next_call() -> None:
    try:
        kept = Node()
        dropped = Node()
        gone = weakref.ref(dropped)
        del dropped
        freeze_long_lived("a test model")
        assert gone() is None  # garbage at the call is collected, not frozen
        assert gc.get_freeze_count() > 0
        replaced = weakref.ref(kept)
        del kept  # a model replaced by a promotion, frozen with its cycle
        gc.collect()
        assert replaced() is not None  # frozen: the collector does not look at it
        freeze_long_lived("the next model")
        assert replaced() is None
    finally:
        gc.unfreeze()
