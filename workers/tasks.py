"""Celery tasks: small arguments, idempotent, acks_late, bounded retries with backoff for transient errors only."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypedDict

from celery import Task
from celery.utils.log import get_task_logger
from elasticsearch import ConnectionError as ESConnectionError
from elasticsearch import ConnectionTimeout, Elasticsearch
from kombu.exceptions import OperationalError
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from indexer import catalog, keys, lifecycle, promotion, tombstones, training
from indexer import task_routing as names
from indexer.cf_serving import ModelCache
from indexer.clients import REDIS_CLUSTER_TRANSIENT, make_es, make_redis
from indexer.documents import validate_items
from indexer.encoder import get_encoder, get_query_encoder
from indexer.errors import BackendUnavailable, Conflict
from indexer.events import record_events as write_events
from indexer.profile_store import ProfileStore
from indexer.read_params import ReadParams
from indexer.reco_logs import CLICK_TYPES, attribute_clicks, flush_logs
from indexer.recommender import Recommender
from indexer.rollback import rollback as items_rollback
from indexer.search import item_vectors
from indexer.settings import get_settings
from indexer.training import TrainOptions
from workers.celery_app import app

log = get_task_logger(__name__)

TRANSIENT = (ESConnectionError, ConnectionTimeout, RedisConnectionError, RedisTimeoutError, BackendUnavailable,
             *REDIS_CLUSTER_TRANSIENT)


class RetryOptions(TypedDict):
    """The retry keywords of app.task, typed so that they can be spread into it."""
    autoretry_for: tuple[type[BaseException], ...]
    retry_backoff: int
    retry_backoff_max: int
    retry_jitter: bool
    max_retries: int


RETRY = RetryOptions(autoretry_for=TRANSIENT, retry_backoff=2, retry_backoff_max=60, retry_jitter=True, max_retries=6)

_es: Elasticsearch | None = None
_redis: Redis | None = None
_models: ModelCache | None = None
_recommender: Recommender | None = None


def _retryable(failure: dict[str, Any]) -> bool:
    """A per-document bulk failure worth retrying: rejected (429) or unavailable (5xx, no status)."""
    status = failure.get("status")
    return status is None or int(status) == 429 or int(status) >= 500


def es() -> Elasticsearch:
    """One client per worker process (a client is thread-safe and pools connections)."""
    global _es
    if _es is None:
        _es = make_es(get_settings(), timeout=60)
    return _es


def models() -> ModelCache:
    """The collaborative models each item-field slot holds (cold items get factors for both)."""
    global _models
    if _models is None:
        _models = ModelCache(es(), get_settings())
    return _models


def redis() -> Redis:
    global _redis
    if _redis is None:
        _redis = make_redis(get_settings())
    return _redis


def recommender() -> Recommender:
    """The API's ranking engine, built the same way, for prefetching (the default list embeds nothing)."""
    global _recommender
    if _recommender is None:
        settings = get_settings()
        _recommender = Recommender(settings, es(), redis(), lambda: get_query_encoder(settings))
    return _recommender


@app.task(name=names.INDEX_ITEMS, bind=True, **RETRY)
def index_items(self: Task[Any, Any], items: list[dict[str, Any] | str]) -> dict[str, Any]:
    """Validate, embed (only changed text or model) and index a batch of items, or of ids of stored
    items (to embed them again with the current model); bad items are reported, good ones indexed."""
    settings = get_settings()
    valid, errors = validate_items([i for i in items if not isinstance(i, str)],
                                   max_text_chars=settings.max_text_chars)
    stored, missing = catalog.load_items(es(), settings, [i for i in items if isinstance(i, str)])
    valid += stored
    result = catalog.index_items(es(), settings, valid, get_encoder(settings), models().slot_models()) \
        if valid else catalog.IndexResult()
    retryable = [f for f in result.failed if _retryable(f)]
    if retryable:
        # Accepted items must not be lost to a rejection or an unavailable shard: the whole batch again
        # (idempotent: external versions), with backoff.
        raise BackendUnavailable(f"{len(retryable)} items not written ({retryable[0].get('error')}); retrying")
    out = result.as_dict()
    out["invalid"] = [e.as_dict() for e in errors] + [{"index": None, "id": m, "errors": ["id: not in the index"]}
                                                      for m in missing]
    return out


@app.task(name=names.DELETE_ITEMS, bind=True, **RETRY)
def delete_items(self: Task[Any, Any], ids: list[str], version_ms: int) -> dict[str, Any]:
    report = catalog.delete_items(es(), get_settings(), ids, version_ms)
    return {"deleted": report.ok, "stale": report.stale, "failed": report.failed}


@contextmanager
def task_lock(task: Task[Any, Any], name: str, what: str) -> Iterator[None]:
    """One task of a kind at a time. The lock names its task: a redelivered task (its worker was killed)
    takes over its own lock and resumes, while a second task is refused with Conflict."""
    key, owner = keys.key(get_settings().index_prefix, name), str(task.request.id)
    if not redis().set(key, owner, nx=True, ex=6 * 3600) and redis().get(key) != owner.encode():
        raise Conflict(f"{what} is already running")
    try:
        yield
    finally:
        if redis().get(key) == owner.encode():
            redis().delete(key)


@app.task(name=names.REINDEX, bind=True, **RETRY)
def reindex(self: Task[Any, Any]) -> dict[str, Any]:
    """Build the next items version and swap the alias; progress is in the task state (PROGRESS)."""
    settings = get_settings()
    with task_lock(self, keys.REINDEX_LOCK, "a reindex"):
        def progress(done: int, total: int) -> None:
            self.update_state(state="PROGRESS", meta={"done": done, "total": total})

        return catalog.reindex(es(), settings, get_encoder(settings), progress)


def _stage_progress(task: Task[Any, Any]) -> Callable[[str, float], None]:
    def progress(stage: str, fraction: float) -> None:
        task.update_state(state="PROGRESS", meta={"stage": stage, "progress": round(fraction, 3)})
    return progress


@app.task(name=names.TRAIN, bind=True, **RETRY)
def train(self: Task[Any, Any], promote: bool = True) -> dict[str, Any]:
    """Train a collaborative model from the events index, gate it, and promote it if it passes.
    Killed at any point, the serving model is untouched (the pointer flips last)."""
    settings = get_settings()
    with task_lock(self, keys.MODEL_LOCK, "a training or model promotion"):
        progress = _stage_progress(self)
        options = TrainOptions(min_events=settings.train_min_events, promote=promote)
        result = training.train(es(), settings, options, progress,
                                promote=lambda version: promotion.promote(es(), settings, version, progress))
        models().invalidate()
        return result.as_dict()


@app.task(name=names.TRAIN_IF_DUE, bind=True, **RETRY)
def train_if_due(self: Task[Any, Any]) -> dict[str, Any]:
    """Celery beat's check: train when enough events arrived since the serving model was trained."""
    settings = get_settings()
    due, reason = training.due(es(), settings, settings.train_min_new_events)
    if not due:
        return {"state": "skipped", "reason": reason}
    result: dict[str, Any] = train.run()
    return result


@app.task(name=names.PROMOTE_MODEL, bind=True, **RETRY)
def promote_model(self: Task[Any, Any], version: int) -> dict[str, Any]:
    with task_lock(self, keys.MODEL_LOCK, "a training or model promotion"):
        result = promotion.promote(es(), get_settings(), version, _stage_progress(self))
        models().invalidate()
        return result


@app.task(name=names.ROLLBACK_MODEL, bind=True, **RETRY)
def rollback_model(self: Task[Any, Any]) -> dict[str, Any]:
    with task_lock(self, keys.MODEL_LOCK, "a training or model promotion"):
        result = promotion.rollback(es(), get_settings(), _stage_progress(self))
        models().invalidate()
        return result


@app.task(name=names.ROLLBACK, bind=True, **RETRY)
def rollback(self: Task[Any, Any]) -> dict[str, Any]:
    """Back to the version live before, with the writes made since (indexer.rollback); never beside a reindex."""
    settings = get_settings()
    with task_lock(self, keys.REINDEX_LOCK, "a reindex or rollback"):
        return items_rollback(es(), settings, get_encoder(settings))


class EventsTask(Task[Any, Any]):
    """Events must never be lost: a batch that exhausts its retries goes to a dead-letter list in Redis
    (`hybridrec events replay` sends it again) instead of vanishing with the task."""

    def on_failure(self, exc: Exception, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:
        events = args[0] if args else kwargs.get("events", [])
        dead_letter(events, f"{type(exc).__name__}: {exc}")


def dead_letter(events: list[dict[str, Any]], reason: str) -> None:
    """Keep events that may yet be written (replayed by `hybridrec events replay`)."""
    _park(keys.EVENTS_DEAD_LETTER, events, reason)


def quarantine(events: list[dict[str, Any]], reason: str) -> None:
    """Keep events that can never be written, for an operator to look at; nothing replays them."""
    _park(keys.EVENTS_QUARANTINE, events, reason)


def _park(kind: str, events: list[dict[str, Any]], reason: str) -> None:
    # The events of a user erased meanwhile are dropped, not kept for a later replay.
    events = [dict(e) for e in tombstones.keep_events(redis(), get_settings(), events)] if events else events
    if events:
        key = keys.key(get_settings().index_prefix, kind)
        redis().rpush(key, json.dumps({"reason": reason, "events": events}))
        log.error("record_events: %d events moved to %s: %s", len(events), key, reason)


# Up to 240 tries, at most a minute apart: an Elasticsearch outage of hours still loses no event.
EVENT_RETRY = RetryOptions({**RETRY, "retry_backoff": 1, "max_retries": 240})


@app.task(name=names.RECORD_EVENTS, bind=True, base=EventsTask, **EVENT_RETRY)
def record_events(self: Task[Any, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """Durable write of accepted events into the events index (_id = event_id: replays are harmless).

    This task writes events and nothing else: click attribution (which needs the reco logs) and deferred
    profile updates are follow-up tasks, so that their failures can never fail, retry or dead-letter a
    batch of events. A refused event is set apart alone (the bulk write isolates it); its neighbours are
    written."""
    settings = get_settings()
    # Events of a user erased since they were accepted are dropped (indexer.tombstones); a user erased
    # while this batch is written gets its events taken back right after.
    events = [dict(e) for e in tombstones.keep_events(redis(), settings, events)]
    report = write_events(es(), settings, events)
    tombstones.take_back(es(), redis(), settings, "events",
                         [(*tombstones.event_user_ts(e), str(e["event_id"])) for e in events])
    retryable = [f for f in report.failed if _retryable(f)]
    if retryable:
        # Rejected or unavailable shards: the whole batch again (idempotent by event id), with backoff.
        raise BackendUnavailable(f"{len(retryable)} events not written ({retryable[0].get('error')}); retrying")
    refused = {f["id"]: f for f in report.failed}
    for failure in report.failed:
        event = [e for e in events if e.get("event_id") == failure["id"]]
        # 400: Elasticsearch refused the document itself, which no replay changes; anything else (a missing
        # alias, say) may be mended by an operator, and the event replayed.
        park = quarantine if failure.get("status") == 400 else dead_letter
        park(event, f"refused ({failure.get('status')}): {failure.get('error')}")
    written = [e for e in events if e.get("event_id") not in refused]
    return {"written": report.ok, "failed": report.failed, "follow_up": _follow_up(settings.index_prefix, written)}


def _follow_up(prefix: str, written: list[dict[str, Any]]) -> list[str]:
    """Queue the work that depends on written events; returns the task ids. The events are safe already:
    a broker hiccup here costs at most a click attribution, and deferred profiles wait for the next batch."""
    clicks = [e for e in written if e.get("request_id") and e.get("type") in CLICK_TYPES]
    sent: list[str] = []
    try:
        if clicks:
            sent.append(str(attribute_clicks_task.delay(clicks).id))
        if redis().llen(keys.key(prefix, keys.PENDING_PROFILE)):
            sent.append(str(drain_profiles.delay().id))
    except (OperationalError, RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("record_events: follow-up tasks not queued (%s); the events are written", exc)
    return sent


@app.task(name=names.ATTRIBUTE_CLICKS, bind=True, **RETRY)
def attribute_clicks_task(self: Task[Any, Any], clicks: list[dict[str, Any]]) -> dict[str, int]:
    """Mark the served lists these clicks came from (logs first, so that the lists are there)."""
    settings = get_settings()
    flush_logs(es(), redis(), settings)
    return {"attributed": attribute_clicks(es(), settings, clicks)}


@app.task(name=names.DRAIN_PROFILES, bind=True, **RETRY)
def drain_profiles(self: Task[Any, Any]) -> dict[str, int]:
    """Elasticsearch answers again: apply the profile updates deferred while it was down. One drain at a
    time (every written batch may queue one): two would apply the same pending updates twice."""
    settings = get_settings()
    lock, owner = keys.key(settings.index_prefix, keys.PROFILE_DRAIN_LOCK), str(self.request.id)
    if not redis().set(lock, owner, nx=True, ex=600):
        return {"profiles_drained": 0}  # the running drain takes what is pending
    try:
        store = ProfileStore(redis(), settings)
        drained = store.drain_pending(lambda ids: item_vectors(es(), lifecycle.alias_name(settings, "items"), ids))
    finally:
        if redis().get(lock) == owner.encode():
            redis().delete(lock)
    return {"profiles_drained": drained}


@app.task(name=names.PREFETCH, bind=True, **RETRY)
def prefetch_recommendations(self: Task[Any, Any], user_ids: list[str]) -> dict[str, int]:
    """Sent by the API after it applied events (HYBRIDREC_PREFETCH): each user's default list, computed
    for the profile version read now and cached under it, so that the next request is a hit. A list
    already cached for that version is not computed again; one computed for a version an event has since
    passed is never served (the read compares versions)."""
    engine, prefetched = recommender(), 0
    for user in dict.fromkeys(user_ids):
        began = time.time()
        if not engine.prefetch(user):
            continue
        prefetched += 1
        # Like every writer of user data: a user erased while the list was computed gets it taken back
        # (the erasure, having set its tombstone first, may have deleted the caches before this write).
        erased = tombstones.erased_at(redis(), get_settings(), [user]).get(user)
        if erased is not None and erased >= began:
            engine.cache.forget(user, ReadParams(), None)
            prefetched -= 1
    return {"prefetched": prefetched}


@app.task(name=names.SNAPSHOT_PROFILES, bind=True, **RETRY)
def snapshot_profiles(self: Task[Any, Any]) -> dict[str, Any]:
    """Copy Redis profiles into the users index for inspection (run periodically by celery beat)."""
    from indexer.profile_maintenance import snapshot_profiles as snapshot

    return snapshot(es(), get_settings())


@app.task(name=names.FLUSH_RECO_LOGS, bind=True, **RETRY)
def flush_reco_logs(self: Task[Any, Any]) -> dict[str, int]:
    """Bulk-write queued recommendation logs (run every few seconds by celery beat, and before events)."""
    return {"written": flush_logs(es(), redis(), get_settings())}
