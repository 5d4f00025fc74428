"""Erasure tombstones: a short-lived Redis mark per erased user, checked by every writer of user data, so that
events still queued (broker, retries, deferred profile updates, unflushed logs) at erasure time never land.

The mark is keyed by a digest of the user id (a tombstone must not itself hold the id) and holds the
erasure's epoch seconds. A record is "from before the erasure" when its timestamp is at most that instant
plus the clock skew the API accepts on event timestamps: every event accepted before the erasure has a ts
no later than that, so none slips through; an event the same user sends within those 5 minutes after the
erasure is dropped too (erring on the side of forgetting). Records timestamped later are new data and kept.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from elasticsearch import Elasticsearch
from redis import Redis

from indexer import keys
from indexer.bulk import run_bulk
from indexer.lifecycle import alias_name
from indexer.settings import Settings

# Longer than the event writer's retry horizon (240 tries at most a minute apart: about 4 hours), plus
# visibility-timeout redeliveries and an ETA; dead letters are scrubbed at erasure, so no later replay needs it.
TOMBSTONE_TTL_S = 3 * 24 * 3600
# The future skew the API accepts on event timestamps (indexer.documents.MAX_FUTURE_SKEW), in seconds.
ACCEPTED_SKEW_S = 5 * 60

Record = TypeVar("Record")


def user_digest(user_id: str) -> str:
    return keys.user_digest(user_id)


def tombstone_key(settings: Settings, user_id: str) -> str:
    """`<prefix>:erased:{<digest>}`: the user's hash tag alone, so it shares the slot of the user's profile
    (ProfileStore.apply watches both in one transaction) and holds no id."""
    return keys.key(settings.index_prefix, keys.ERASED, keys.user_tag(user_id))


def mark(redis: Redis, settings: Settings, user_id: str, now: float | None = None) -> float:
    """Set (or move forward) the user's tombstone; returns the erasure instant."""
    now = time.time() if now is None else now
    redis.set(tombstone_key(settings, user_id), repr(now), ex=TOMBSTONE_TTL_S)
    return now


def erased_at(redis: Redis, settings: Settings, user_ids: Iterable[str]) -> dict[str, float]:
    """The erasure instant of each of these users that has a live tombstone (one round trip)."""
    users = sorted({u for u in user_ids if u})
    if not users:
        return {}
    # GETs in one pipeline, not MGET: one user's tombstone is in that user's slot, and a cluster refuses an
    # MGET across slots (a pipeline goes to each node in one round trip).
    with redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.get(tombstone_key(settings, user))
        values = pipe.execute()
    return {u: float(v) for u, v in zip(users, values, strict=True) if v is not None}


def epoch(value: object) -> float | None:
    """Epoch seconds of an event or log timestamp (ISO text or a number); None when unreadable."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def before(erased: float, ts: float | None) -> bool:
    """Whether a record of an erased user is older data the erasure covers (an unreadable ts counts as older)."""
    return ts is None or ts <= erased + ACCEPTED_SKEW_S


def keep_records(redis: Redis, settings: Settings, records: Sequence[Record],
                 user_and_ts: Callable[[Record], tuple[str, float | None]]) -> list[Record]:
    """The records not covered by a tombstone; `user_and_ts(record)` gives (user id, epoch seconds or None)."""
    pairs = [user_and_ts(r) for r in records]
    erased = erased_at(redis, settings, (user for user, _ in pairs))
    if not erased:
        return list(records)
    return [r for r, (user, ts) in zip(records, pairs, strict=True)
            if user not in erased or not before(erased[user], ts)]


def event_user_ts(doc: Mapping[str, Any]) -> tuple[str, float | None]:
    """(user, ts) of an event document (indexer.events.event_document) or a reco-log line."""
    return str(doc.get("user_id") or ""), epoch(doc.get("ts"))


def keep_events(redis: Redis, settings: Settings, docs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Event documents (or reco-log lines) not covered by a tombstone."""
    return keep_records(redis, settings, docs, event_user_ts)


def physical_indices(es: Elasticsearch, settings: Settings, kind: str) -> list[str]:
    """Every physical version of an index kind: the versions kept for rollback as well as the live one."""
    alias = alias_name(settings, kind)
    found = es.indices.get(index=[f"{alias}-v*", alias], ignore_unavailable=True, allow_no_indices=True)
    return sorted(found.body)


def take_back(es: Elasticsearch, redis: Redis, settings: Settings, kind: str,
              written: Sequence[tuple[str, float | None, str]]) -> int:
    """After a write of (user, ts, document id) rows into `kind`: delete those of users erased while it ran.

    The erasure sets its tombstone before it scans; so a writer either saw the tombstone before writing,
    or finds it here, or wrote before the tombstone was set and the erasure's scan finds its documents."""
    erased = erased_at(redis, settings, (user for user, _, _ in written))
    doomed = [doc_id for user, ts, doc_id in written if user in erased and before(erased[user], ts)]
    names = physical_indices(es, settings, kind) if doomed else []
    if not names:
        return 0
    report = run_bulk(es, ({"_op_type": "delete", "_index": name, "_id": doc_id}
                           for name in names for doc_id in doomed))
    return report.ok
