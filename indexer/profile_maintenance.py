"""Rebuild every user profile (and trending) in Redis from the events index, the source of truth; snapshot
profiles into the users index; move per-user keys named before they carried the user's hash tag."""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from elasticsearch import Elasticsearch
from redis.exceptions import ResponseError

from indexer import keys, tombstones
from indexer.clients import make_redis, reply_bytes, reply_text
from indexer.events import scan_events
from indexer.lifecycle import alias_name
from indexer.profile_store import AppliedEvent, ProfileStore, profile_from_events
from indexer.search import item_vectors
from indexer.settings import Settings


def rebuild_profiles(es: Elasticsearch, settings: Settings) -> dict[str, Any]:
    es.indices.refresh(index=alias_name(settings, "events"))
    per_user: dict[str, list[AppliedEvent]] = defaultdict(list)
    for doc in scan_events(es, settings):
        ts = datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp()
        per_user[doc["user_id"]].append(AppliedEvent(doc["item_id"], float(doc["weight"]), ts, doc.get("session_id")))
    item_ids = sorted({e.item_id for events in per_user.values() for e in events})
    vectors = {}
    for start in range(0, len(item_ids), 1000):
        vectors.update(item_vectors(es, alias_name(settings, "items"), item_ids[start:start + 1000]))
    redis = make_redis(settings)
    # Events of a user erased while this scan ran (the erasure deletes them from the index) stay out.
    for user_id, erased in tombstones.erased_at(redis, settings, per_user).items():
        per_user[user_id] = [e for e in per_user[user_id] if not tombstones.before(erased, e.ts)]
        if not per_user[user_id]:
            del per_user[user_id]
    store = ProfileStore(redis, settings)
    store.clear_trending()
    for user_id, events in per_user.items():
        store.replace(user_id, profile_from_events(events, vectors, store.half_life_s), events)
    return {"users": len(per_user), "events": sum(len(v) for v in per_user.values())}


def snapshot_profiles(es: Elasticsearch, settings: Settings) -> dict[str, Any]:
    """Copy every Redis profile into the users index (for inspection in Kibana); idempotent per version.
    A profile Elasticsearch refuses (a user id over its limits, kept from before the API checked them) is
    counted as failed alone; every other profile is written."""
    from indexer.bulk import run_bulk
    from indexer.profile import interest_vector, session_vector

    redis = make_redis(settings)
    store = ProfileStore(redis, settings)
    index = alias_name(settings, "users")
    snapshots: list[tuple[str, float | None, str]] = []

    def actions() -> Iterator[dict[str, Any]]:
        for user_id in store.user_ids():
            profile = store.load(user_id)
            if profile is None:
                continue
            doc: dict[str, Any] = {"user_id": user_id, "version": profile.version, "event_count": profile.event_count,
                                   "recent_items": store.history(user_id)[:20]}
            if profile.updated_ts is not None:
                doc["updated_at"] = datetime.fromtimestamp(profile.updated_ts, tz=UTC).isoformat()
            for field, vector in (("long_term", interest_vector(profile)), ("session", session_vector(profile))):
                if vector is not None:
                    doc[field] = [float(x) for x in vector]
            snapshots.append((user_id, profile.updated_ts, user_id))
            # External version = profile version: an older snapshot never replaces a newer one.
            yield {"_index": index, "_id": user_id, "_source": doc, "version": profile.version,
                   "version_type": "external_gte"}

    report = run_bulk(es, actions())
    # A profile read before its user was erased must not leave a snapshot behind.
    tombstones.take_back(es, redis, settings, "users", snapshots)
    # A stale snapshot (an older profile version than the stored one) is not a failure: nothing was lost.
    return {"written": report.ok, "stale": report.stale, "failed": len(report.failed)}


_TAGGED = re.compile(r"\{[0-9a-f]{32}\}(:|$)")


def migrate_untagged_keys(settings: Settings) -> dict[str, int]:
    """Move the per-user keys named before they carried the user's hash tag (`<prefix>:profile:<user>`, `seen`,
    `history`; tombstones `<prefix>:erased:<digest>`) to their tagged names, their TTL kept (DUMP/RESTORE, so
    it works across a cluster's slots too). Idempotent. A user whose tagged key exists already (an event
    arrived since the upgrade) keeps it, and the old key is left for `profiles rebuild` to make whole."""
    redis = make_redis(settings)
    counts = {"moved": 0, "kept_newer": 0}
    for kind in (keys.PROFILE, keys.SEEN, keys.HISTORY, keys.ERASED):
        head = keys.key(settings.index_prefix, kind, "")
        for raw in redis.scan_iter(match=head + "*", count=1000):
            old = reply_text(raw)
            rest = old[len(head):]
            if _TAGGED.match(rest):
                continue
            new = keys.key(settings.index_prefix, kind, "{" + rest + "}") if kind == keys.ERASED \
                else keys.user_key(settings.index_prefix, kind, rest)
            dumped, ttl_ms = redis.dump(old), int(redis.pttl(old))
            if dumped is None or ttl_ms == -2:  # gone meanwhile (expired)
                continue
            try:
                redis.restore(new, max(ttl_ms, 0), reply_bytes(dumped))
            except ResponseError as exc:
                if "BUSYKEY" not in str(exc):
                    raise
                counts["kept_newer"] += 1
                continue
            redis.delete(old)
            counts["moved"] += 1
    return counts
