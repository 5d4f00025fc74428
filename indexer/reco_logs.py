"""Recommendation logs: every served list is queued in Redis off the request path (a thread per API process
pushes what has gathered, one push for many lines) and bulk-written to the reco-logs index by the workers;
clicks carrying the request id are attributed back, so CTR per strategy is one aggregation."""
from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from queue import Empty, SimpleQueue
from typing import Any

from elasticsearch import Elasticsearch
from redis import Redis
from redis.exceptions import RedisError

from indexer import keys, tombstones
from indexer.bulk import run_bulk
from indexer.lifecycle import alias_name
from indexer.settings import Settings

log = logging.getLogger(__name__)

# Event types that count as a click on a served recommendation.
CLICK_TYPES = frozenset({"click", "cart", "purchase", "like"})


def queue_key(settings: Settings) -> str:
    return keys.key(settings.index_prefix, keys.RECO_LOG_QUEUE)


# Lines one push carries at most (a backlog after a Redis hiccup goes in several).
MAX_PUSH = 500


class LogQueue:
    """Served-list log lines on their way to the Redis queue, pushed by a thread of this process: the
    request that served a list spends no round trip on its log line, and under load many lines share one
    push. Lines wait only while a push is in flight; a process killed outright loses those (at most a
    push's worth); one that exits normally pushes what it holds first."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.key = queue_key(settings)
        self.timeout = settings.redis_timeout
        self._lines: SimpleQueue[dict[str, Any] | threading.Event] = SimpleQueue()
        self._owner: int | None = None  # the process whose thread drains _lines (a fork starts its own)
        self._lock = threading.Lock()
        atexit.register(self.flush)

    def add(self, doc: dict[str, Any]) -> None:
        """Queue one line; the writer thread pushes it."""
        if self._owner != os.getpid():
            self._start()
        self._lines.put(doc)

    def flush(self) -> bool:
        """Wait until every line added so far is pushed (or its push failed); False on timeout."""
        if self._owner != os.getpid():
            return True  # nothing was added in this process
        done = threading.Event()
        self._lines.put(done)
        return done.wait(self.timeout * 2)

    def _start(self) -> None:
        with self._lock:
            if self._owner == os.getpid():
                return
            self._lines = SimpleQueue()  # what a parent had queued is its own to push
            threading.Thread(target=self._run, name="reco-log-writer", daemon=True).start()
            self._owner = os.getpid()

    def _run(self) -> None:
        lines = self._lines
        while True:
            batch = [lines.get()]
            while len(batch) < MAX_PUSH:
                try:
                    batch.append(lines.get_nowait())
                except Empty:
                    break
            docs = [json.dumps(item) for item in batch if isinstance(item, dict)]
            if docs:
                try:
                    self.redis.rpush(self.key, *docs)
                except RedisError as exc:  # the lists matter more than their log lines: say what was lost
                    log.warning("%d reco log lines not queued: %s", len(docs), exc)
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()


def log_document(request_id: str, endpoint: str, body: Mapping[str, Any], k: int, ts: str) -> dict[str, Any]:
    items = body.get("items", [])
    return {"request_id": request_id, "ts": ts, "endpoint": endpoint, "user_id": body.get("user_id"),
            "strategy": body.get("strategy"), "cold_start": bool(body.get("cold_start")),
            "degraded": bool(body.get("degraded")), "cached": bool(body.get("cached")), "k": k,
            "items": [i["id"] for i in items], "scores": [float(i.get("score", 0.0)) for i in items],
            "latency_ms": float(body.get("took_ms", 0.0)), "clicked": 0}


def flush_logs(es: Elasticsearch, redis: Redis, settings: Settings, batch: int = 1000) -> int:
    """Move queued logs into the reco-logs index; trims the queue only after the bulk write succeeded."""
    key = queue_key(settings)
    alias = alias_name(settings, "reco_logs")
    written = 0
    while True:
        raw = redis.lrange(key, 0, batch - 1)
        if not raw:
            return written
        # Skip lines an erasure scrubbed in place (positions must not move under this LRANGE/LTRIM) and
        # lines of a user erased since they were queued; a user erased meanwhile gets them taken back.
        docs = [dict(d) for d in tombstones.keep_events(redis, settings, [d for d in map(json.loads, raw) if d])]

        def actions(docs: list[dict[str, Any]] = docs) -> Iterator[dict[str, Any]]:
            for doc in docs:
                # op_type create: a log replayed after a crash never resets a click already attributed.
                yield {"_op_type": "create", "_index": alias, "_id": doc["request_id"], "_source": doc}

        report = run_bulk(es, actions(), require_alias=True)
        retryable = [f for f in report.failed if f.get("status") != 400]
        if retryable:
            raise RuntimeError(f"{len(retryable)} reco logs not written: {retryable[0]['error']}")
        if report.failed:
            # Refused for what the line holds: no retry changes that, and keeping it would block the queue.
            log.error("dropped %d reco logs Elasticsearch refused: %s", len(report.failed), report.failed[0]["error"])
        tombstones.take_back(es, redis, settings, "reco_logs",
                             [(*tombstones.event_user_ts(d), str(d["request_id"])) for d in docs])
        redis.ltrim(key, len(raw), -1)
        written += len(docs)


def attribute_clicks(es: Elasticsearch, settings: Settings, events: Sequence[Mapping[str, Any]]) -> int:
    """Mark the logged lists that clicks (events with a request id) came from; returns how many."""
    alias = alias_name(settings, "reco_logs")
    clicks = [e for e in events if e.get("request_id") and e.get("type") in CLICK_TYPES]
    if not clicks:
        return 0

    def actions() -> Iterator[dict[str, Any]]:
        for event in clicks:
            yield {"_op_type": "update", "_index": alias, "_id": event["request_id"],
                   "doc": {"clicked": 1, "first_click_ts": event["ts"], "clicked_items": [event["item_id"]]}}

    report = run_bulk(es, actions(), require_alias=True)
    return report.ok  # a 404 (no such request logged) counts as not attributed, not as an error


def ctr_by_strategy(es: Elasticsearch, settings: Settings) -> list[dict[str, Any]]:
    """Served lists, clicked lists and CTR per strategy, in one aggregation."""
    alias = alias_name(settings, "reco_logs")
    es.indices.refresh(index=alias)
    response = es.search(index=alias, size=0, aggs={"strategy": {
        "terms": {"field": "strategy", "size": 50},
        "aggs": {"ctr": {"avg": {"field": "clicked"}}, "clicked": {"sum": {"field": "clicked"}}}}})
    return [{"strategy": b["key"], "served": b["doc_count"], "clicked": int(b["clicked"]["value"] or 0),
             "ctr": round(float(b["ctr"]["value"] or 0.0), 4)} for b in response["aggregations"]["strategy"]["buckets"]]
