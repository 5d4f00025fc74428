"""Celery tasks: small arguments, idempotent, acks_late, bounded retries with backoff for transient errors only."""
from __future__ import annotations

from typing import Any

from celery import Task
from celery.utils.log import get_task_logger
from elasticsearch import ConnectionError as ESConnectionError
from elasticsearch import ConnectionTimeout
from elasticsearch import Elasticsearch
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from indexer import catalog, lifecycle
from indexer.clients import make_es, make_redis
from indexer.documents import validate_items
from indexer.encoder import get_encoder
from indexer.errors import BackendUnavailable, Conflict
from indexer.events import record_events as write_events
from indexer.settings import get_settings
from indexer import tasknames as names
from workers.celery_app import app

log = get_task_logger(__name__)

TRANSIENT = (ESConnectionError, ConnectionTimeout, RedisConnectionError, RedisTimeoutError, BackendUnavailable)
RETRY = {"autoretry_for": TRANSIENT, "retry_backoff": 2, "retry_backoff_max": 60, "retry_jitter": True,
         "max_retries": 6}

_es: Elasticsearch | None = None


def es() -> Elasticsearch:
    """One client per worker process (a client is thread-safe and pools connections)."""
    global _es
    if _es is None:
        _es = make_es(get_settings(), timeout=60)
    return _es


@app.task(name=names.INDEX_ITEMS, bind=True, **RETRY)
def index_items(self: Task, items: list[dict[str, Any] | str]) -> dict[str, Any]:
    """Validate, embed (only changed text or model) and index a batch of items, or of ids of stored
    items (to embed them again with the current model); bad items are reported, good ones indexed."""
    settings = get_settings()
    valid, errors = validate_items([i for i in items if not isinstance(i, str)],
                                   max_text_chars=settings.max_text_chars)
    stored, missing = catalog.load_items(es(), settings, [i for i in items if isinstance(i, str)])
    valid += stored
    result = catalog.index_items(es(), settings, valid, get_encoder(settings)) if valid else catalog.IndexResult()
    out = result.as_dict()
    out["invalid"] = [e.as_dict() for e in errors] + [{"index": None, "id": m, "errors": ["id: not in the index"]}
                                                      for m in missing]
    return out


@app.task(name=names.DELETE_ITEMS, bind=True, **RETRY)
def delete_items(self: Task, ids: list[str], version_ms: int) -> dict[str, Any]:
    report = catalog.delete_items(es(), get_settings(), ids, version_ms)
    return {"deleted": report.ok, "stale": report.stale, "failed": report.failed}


@app.task(name=names.REINDEX, bind=True, **RETRY)
def reindex(self: Task) -> dict[str, Any]:
    """Build the next items version and swap the alias; progress is in the task state (PROGRESS)."""
    settings = get_settings()
    lock = make_redis(settings).lock(f"{settings.index_prefix}:reindex-lock", timeout=6 * 3600, blocking_timeout=1)
    if not lock.acquire():
        raise Conflict("a reindex is already running")
    try:
        def progress(done: int, total: int) -> None:
            self.update_state(state="PROGRESS", meta={"done": done, "total": total})

        return catalog.reindex(es(), settings, get_encoder(settings), progress)
    finally:
        lock.release()


@app.task(name=names.ROLLBACK, bind=True, **RETRY)
def rollback(self: Task) -> dict[str, str]:
    previous, current = lifecycle.rollback(es(), get_settings())
    return {"from": previous, "to": current}


@app.task(name=names.RECORD_EVENTS, bind=True, **RETRY)
def record_events(self: Task, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Durable write of accepted events into the events index (_id = event_id: replays are harmless)."""
    report = write_events(es(), get_settings(), events)
    if report.failed:
        log.error("record_events: %d events failed: %s", len(report.failed), report.failed[:3])
    return {"written": report.ok, "failed": report.failed}


@app.task(name=names.SNAPSHOT_PROFILES, bind=True, **RETRY)
def snapshot_profiles(self: Task) -> dict[str, Any]:
    """Copy Redis profiles into the users index for inspection (run periodically by celery beat)."""
    from indexer.rebuild import snapshot_profiles as snapshot

    return snapshot(es(), get_settings())
