"""A user's data: export everything hybridrec holds about one user, and erase it from every store (the Redis
profile, seen set, history, caches and queues; every physical version of the events, reco-logs and users
indices; the dead-letter list), leaving a tombstone (indexer.tombstones) so that nothing queued comes back."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan
from redis import Redis
from redis.exceptions import WatchError

from indexer import keys, tombstones
from indexer.bulk import run_bulk
from indexer.clients import reply_scored, reply_text, reply_texts
from indexer.errors import BackendUnavailable
from indexer.profile import interest_vector, session_vector
from indexer.profile_store import ProfileStore
from indexer.reco_logs import queue_key
from indexer.settings import Settings

# Index kinds that hold documents about one user, each found by its `user_id` field, and the store's name
# in the erasure's counts.
USER_INDEX_KINDS = {"events": "events", "reco_logs": "reco_logs", "users": "snapshots"}
# What a scrubbed entry of a list that workers consume by position (LRANGE n, then LTRIM n) becomes: removing
# it would shift the positions under a consumer and make it trim an entry it never read. Consumers skip it.
SCRUBBED = "null"
_DROPPED = "hybridrec:erased-dead-letter"
SCAN_SIZE = 1000
SCROLL = "1m"

# Atomic in Redis, so pushes and trims by others never interleave with it. KEYS[1]: a list of JSON entries;
# ARGV[1]: the user; ARGV[2]: "pair" (entries [user, ...]) or "field" (objects with a user_id).
_SCRUB_LIST = """
local n = redis.call('LLEN', KEYS[1])
local scrubbed = 0
for start = 0, n - 1, 1000 do
  local entries = redis.call('LRANGE', KEYS[1], start, start + 999)
  for i, entry in ipairs(entries) do
    local ok, decoded = pcall(cjson.decode, entry)
    if ok and type(decoded) == 'table' then
      local user = decoded['user_id']
      if ARGV[2] == 'pair' then user = decoded[1] end
      if user == ARGV[1] then
        redis.call('LSET', KEYS[1], start + i - 1, ARGV[3])
        scrubbed = scrubbed + 1
      end
    end
  end
end
return scrubbed
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def _cache_keys(redis: Redis, settings: Settings, user_id: str) -> list[str]:
    """The response cache and last-good keys of this user (`<prefix>:<kind>:<digest>:<user>`)."""
    found = []
    for kind in (keys.RECO, keys.RECO_LAST):
        pattern = keys.key(settings.index_prefix, kind, "*", _glob_escape(user_id))
        for raw in redis.scan_iter(match=pattern, count=1000):
            name = reply_text(raw)
            if name.split(":", 3)[3:] == [user_id]:  # the glob's * also matches a ':' inside another user id
                found.append(name)
    return found


def _user_keys(settings: Settings, user_id: str) -> dict[str, str]:
    return {kind: keys.key(settings.index_prefix, kind, user_id) for kind in (keys.PROFILE, keys.SEEN, keys.HISTORY)}


def _scrub_dead_letters(redis: Redis, settings: Settings, user_id: str) -> int:
    """Take the user's events out of every dead-letter batch (a batch left empty goes); returns how many.
    Optimistic (WATCH): a replay popping meanwhile makes it start again."""
    key = keys.key(settings.index_prefix, keys.EVENTS_DEAD_LETTER)
    for _ in range(50):
        with redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                changes: list[tuple[int, str]] = []
                removed = 0
                for position, raw in enumerate(reply_texts(pipe.lrange(key, 0, -1))):
                    entry = json.loads(raw)
                    events = entry.get("events", [])
                    kept = [e for e in events if e.get("user_id") != user_id]
                    if len(kept) < len(events):
                        removed += len(events) - len(kept)
                        changes.append((position, json.dumps({**entry, "events": kept}) if kept else _DROPPED))
                if not changes:
                    return 0
                pipe.multi()
                for position, value in changes:
                    pipe.lset(key, position, value)
                pipe.lrem(key, 0, _DROPPED)
                pipe.execute()
                return removed
            except WatchError:
                continue
    raise BackendUnavailable("the dead-letter list kept changing during the erasure; try again")


def erase_redis(redis: Redis, settings: Settings, user_id: str) -> dict[str, int]:
    """Delete the user's Redis state and scrub the user's entries from the shared queues; counts per store."""
    per_user = _user_keys(settings, user_id)
    caches = _cache_keys(redis, settings, user_id)
    with redis.pipeline(transaction=False) as pipe:
        for name in per_user.values():
            pipe.delete(name)
        for start in range(0, len(caches), 500):
            pipe.delete(*caches[start:start + 500])
        deleted = [int(n) for n in pipe.execute()]
    scrub = redis.register_script(_SCRUB_LIST)
    pending = scrub(keys=[keys.key(settings.index_prefix, keys.PENDING_PROFILE)], args=[user_id, "pair", SCRUBBED])
    logs = scrub(keys=[queue_key(settings)], args=[user_id, "field", SCRUBBED])
    counts = dict(zip(per_user, deleted, strict=False))
    counts.update({"caches": sum(deleted[len(per_user):]), "pending_profile_updates": int(pending),
                   "queued_reco_logs": int(logs), "dead_letter_events": _scrub_dead_letters(redis, settings, user_id)})
    return counts


def _user_query(kind: str, user_id: str) -> dict[str, Any]:
    if kind == "users":  # a snapshot's _id is its user
        return {"bool": {"should": [{"term": {"user_id": user_id}}, {"ids": {"values": [user_id]}}]}}
    return {"term": {"user_id": user_id}}


def _delete_matching(es: Elasticsearch, settings: Settings, kind: str, user_id: str) -> int:
    """Delete the user's documents from every physical index of `kind` (scan ids, bulk deletes: this works
    without the reindex module's _delete_by_query)."""
    names = tombstones.physical_indices(es, settings, kind)
    if not names:
        return 0
    # Refresh first: a document written a moment ago must be found by the scan.
    es.indices.refresh(index=names)

    def actions() -> Iterator[dict[str, Any]]:
        for name in names:
            for hit in scan(es, index=name, query={"query": _user_query(kind, user_id), "_source": False},
                            size=SCAN_SIZE, scroll=SCROLL, request_timeout=settings.es_timeout):
                yield {"_op_type": "delete", "_index": hit["_index"], "_id": hit["_id"]}

    report = run_bulk(es, actions())
    if report.failed:
        raise BackendUnavailable(f"{len(report.failed)} {kind} documents not deleted ({report.failed[0]['error']}); "
                                 "the erasure is idempotent: try again")
    es.indices.refresh(index=names)
    return report.ok


def erase_user(es: Elasticsearch, redis: Redis, settings: Settings, user_id: str) -> dict[str, Any]:
    """Erase everything about the user; idempotent (a second call counts zeros). The tombstone is set first,
    so a writer either sees it or has written before the scans below, which then find its documents."""
    erased = tombstones.mark(redis, settings, user_id)
    counts: dict[str, int] = {}
    for kind, store in USER_INDEX_KINDS.items():
        counts[store] = _delete_matching(es, settings, kind, user_id)
    counts.update(erase_redis(redis, settings, user_id))
    return {"user_id": user_id, "erased_at": datetime.fromtimestamp(erased, tz=UTC).isoformat(),
            "deleted": counts, "total": sum(counts.values())}


def _sources(es: Elasticsearch, settings: Settings, kind: str, user_id: str) -> list[dict[str, Any]]:
    names = tombstones.physical_indices(es, settings, kind)
    if not names:
        return []
    es.indices.refresh(index=names)  # what was written a moment ago is held too
    hits: dict[tuple[str, str], dict[str, Any]] = {}
    for name in names:
        for hit in scan(es, index=name, query={"query": _user_query(kind, user_id)}, size=SCAN_SIZE, scroll=SCROLL,
                        request_timeout=settings.es_timeout):
            hits.setdefault((kind, hit["_id"]), hit["_source"])  # the same document in two versions: once
    return sorted(hits.values(), key=lambda doc: str(doc.get("ts", "")))


def _queued(redis: Redis, key: str, user_id: str, pair: bool) -> list[Any]:
    found = []
    for raw in reply_texts(redis.lrange(key, 0, -1)):
        entry = json.loads(raw)
        if pair and isinstance(entry, list) and entry[0] == user_id:
            found.append(entry[1])
        elif not pair and isinstance(entry, dict) and entry.get("user_id") == user_id:
            found.append(entry)
    return found


def export_user(es: Elasticsearch, redis: Redis, settings: Settings, user_id: str) -> dict[str, Any]:
    """Everything held about the user, as JSON values: the Redis profile (with its interest directions),
    history, seen set, the events, served-list logs and snapshots, and what still waits in queues."""
    store = ProfileStore(redis, settings)
    profile = store.load(user_id)
    profile_doc: dict[str, Any] | None = None
    if profile is not None:
        profile_doc = {
            "version": profile.version, "event_count": profile.event_count, "updated_ts": profile.updated_ts,
            "session_id": profile.session_id, "session_ts": profile.session_ts,
            "interactions": [{"item_id": i.item_id, "weight": i.weight, "ts": i.ts} for i in profile.interactions],
            "long_term": _floats(interest_vector(profile)), "session": _floats(session_vector(profile))}
    seen = reply_scored(redis.zrange(keys.key(settings.index_prefix, keys.SEEN, user_id), 0, -1, withscores=True))
    dead = [e for raw in reply_texts(redis.lrange(keys.key(settings.index_prefix, keys.EVENTS_DEAD_LETTER), 0, -1))
            for e in json.loads(raw).get("events", []) if e.get("user_id") == user_id]
    queued = {"pending_profile_updates": _queued(redis, keys.key(settings.index_prefix, keys.PENDING_PROFILE),
                                                 user_id, pair=True),
              "reco_logs": _queued(redis, queue_key(settings), user_id, pair=False), "dead_letter_events": dead}
    held: dict[str, Any] = {
        "profile": profile_doc, "history": store.history(user_id),
        "seen": [{"item_id": item, "ts": ts} for item, ts in seen],
        "events": _sources(es, settings, "events", user_id),
        "reco_logs": _sources(es, settings, "reco_logs", user_id),
        "snapshots": _sources(es, settings, "users", user_id)}
    found = any(held.values()) or any(queued.values())
    return {"user_id": user_id, "found": found, **held, "queued": queued}


def _floats(vector: Any) -> list[float] | None:
    return None if vector is None else [round(float(x), 6) for x in vector]
