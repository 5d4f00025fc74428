"""A running task keeps its message from being delivered a second time.

With acks_late the Redis transport keeps each delivered message in a sorted set (`unacked_index`) scored
by the time it was delivered, and any worker puts back into its queue every message older than the
visibility timeout: that is how the task of a killed worker comes back. It cannot tell a dead worker
from a slow task, so a reindex or a training that runs past the timeout is delivered again while it still
runs (celery/celery#5935) and runs twice. Here every pool process re-scores the messages of the tasks it
is running, a few times per timeout, so only a message whose worker stopped re-scoring it (died) comes
back, a timeout after its last heartbeat.
"""
from __future__ import annotations

import logging
import threading
import time

from kombu.transport.redis import Channel
from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# The Redis transport's own name for the set (a transport option nothing here overrides).
UNACKED_INDEX = Channel.unacked_index_key


class VisibilityKeeper:
    """The delivery tags this process is running, re-scored to now every `interval` seconds by one daemon
    thread. `XX`: a message acknowledged meanwhile is never added back."""

    def __init__(self, client: Redis, interval: float, key: str = UNACKED_INDEX) -> None:
        self.client, self.interval, self.key = client, interval, key
        self._tags: set[str] = set()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, tag: str) -> None:
        with self._guard:
            self._tags.add(tag)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="visibility-keeper", daemon=True)
                self._thread.start()

    def release(self, tag: str) -> None:
        with self._guard:
            self._tags.discard(tag)

    def refresh(self) -> int:
        """Re-score the held messages now; how many were still unacknowledged."""
        with self._guard:
            tags = list(self._tags)
        if not tags:
            return 0
        now = time.time()
        changed = self.client.zadd(self.key, dict.fromkeys(tags, now), xx=True, ch=True)
        return int(changed or 0)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.refresh()
            except RedisError as exc:  # the broker is away: the next tick tries again
                log.warning("could not keep running tasks' messages invisible: %s", exc)
