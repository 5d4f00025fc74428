"""User profiles in Redis: the hot copy, updated the moment an event is accepted; plus seen sets and trending."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError
from redis.typing import EncodableT, FieldT

from indexer import keys, tombstones
from indexer.clients import reply_hash, reply_scored, reply_text, reply_texts
from indexer.interactions import Interaction, record
from indexer.profile import Profile, apply_event, from_bytes, rebuild, to_bytes
from indexer.settings import Settings

# Trending scores are stored as count * 2 ** ((ts - EPOCH) / half_life): adding 2 ** (...) per event
# decays every older event relative to newer ones without ever rewriting the whole set.
TRENDING_EPOCH = 1_735_689_600.0  # 2025-01-01T00:00:00Z
HISTORY_LEN = 50


def _fields(profile: Profile) -> Mapping[FieldT, EncodableT]:
    """The profile's hash fields, typed as redis-py's HSET wants them."""
    return dict(to_bytes(profile).items())


@dataclass(frozen=True)
class AppliedEvent:
    item_id: str
    weight: float
    ts: float
    session_id: str | None


def profile_from_events(events: Sequence[AppliedEvent], vectors: Mapping[str, np.ndarray],
                        half_life_s: float) -> Profile:
    """The profile a user's events give, as if applied live: the interest vectors from the events whose
    item has a vector; version, count and the interaction history from every event."""
    known = [(vectors[e.item_id], e.weight, e.ts, e.session_id) for e in events if e.item_id in vectors]
    profile = rebuild(known, half_life_s=half_life_s)
    history: tuple[Interaction, ...] = ()
    for event in sorted(events, key=lambda e: e.ts):
        history = record(history, event.item_id, event.weight, event.ts)
    return replace(profile, version=len(events), event_count=len(events), interactions=history)


class ProfileStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.prefix = settings.index_prefix
        self.half_life_s = settings.half_life_days * 86400.0
        self.seen_window_s = settings.seen_window_days * 86400.0

    def load(self, user_id: str) -> Profile | None:
        raw = self.redis.hgetall(keys.user_key(self.prefix, keys.PROFILE, user_id))
        return from_bytes(reply_hash(raw)) if raw else None

    def load_with_seen(self, user_id: str, now: float | None = None) -> tuple[Profile | None, list[str]]:
        """Profile and seen items in one Redis round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            self.queue_load(pipe, user_id, now)
            raw, seen = pipe.execute()
        return self.loaded(raw, seen)

    def queue_load(self, pipe: Pipeline, user_id: str, now: float | None = None) -> None:
        """Add the profile and seen-set reads to `pipe` (two replies, for `loaded`): the read path sends
        them in its one round trip, beside the cached answer."""
        now = now or time.time()
        pipe.hgetall(keys.user_key(self.prefix, keys.PROFILE, user_id))
        pipe.zrevrangebyscore(keys.user_key(self.prefix, keys.SEEN, user_id), "+inf", now - self.seen_window_s)

    @staticmethod
    def loaded(raw: Mapping[Any, Any], seen: object) -> tuple[Profile | None, list[str]]:
        """The profile (None: no profile) and seen items from the replies `queue_load` asked for."""
        return (from_bytes(reply_hash(raw)) if raw else None), reply_texts(seen)

    def version(self, user_id: str) -> int:
        raw = self.redis.hget(keys.user_key(self.prefix, keys.PROFILE, user_id), "version")
        return int(raw) if raw else 0

    def apply(self, user_id: str, vector: np.ndarray | None, event: AppliedEvent) -> Profile:
        """Fold one event into the user's profile atomically (optimistic WATCH/MULTI, retried on a race).

        An event whose item has no vector (unknown item) still marks the item seen and bumps trending.
        An event of a user erased since it was accepted (indexer.tombstones) is not applied: watching the
        tombstone too, an erasure can never slip in between this read and the write. The transaction holds
        only the user's keys (one slot on a Redis Cluster); trending, shared by all users, is bumped right
        after it commits (a crash in between costs trending one event, never the profile).
        """
        key = keys.user_key(self.prefix, keys.PROFILE, user_id)
        tombstone = tombstones.tombstone_key(self.settings, user_id)
        for _ in range(50):
            with self.redis.pipeline(transaction=True) as pipe:  # a cluster pipeline defaults to none
                try:
                    pipe.watch(key, tombstone)
                    raw = pipe.hgetall(key)
                    profile = from_bytes(reply_hash(raw)) if raw else Profile()
                    erased = pipe.get(tombstone)
                    if erased is not None and tombstones.before(float(erased), event.ts):
                        pipe.unwatch()
                        return profile
                    if vector is not None:
                        updated = apply_event(profile, vector, weight=event.weight, ts=event.ts,
                                              session_id=event.session_id, half_life_s=self.half_life_s)
                    else:
                        updated = replace(profile, version=profile.version + 1, event_count=profile.event_count + 1)
                    updated = replace(updated, interactions=record(profile.interactions, event.item_id,
                                                                   event.weight, event.ts))
                    pipe.multi()
                    pipe.hset(key, mapping=_fields(updated))
                    self._side_effects(pipe, user_id, event)
                    pipe.execute()
                    self._bump_trending([event])
                    return updated
                except WatchError:
                    continue
        raise RuntimeError(f"profile {user_id}: too much contention, event not applied")

    def _side_effects(self, pipe: Redis, user_id: str, event: AppliedEvent) -> None:
        seen = keys.user_key(self.prefix, keys.SEEN, user_id)
        pipe.zadd(seen, {event.item_id: event.ts}, gt=True)  # GT still adds new members; it keeps the newest ts
        pipe.zremrangebyscore(seen, "-inf", time.time() - self.seen_window_s)
        pipe.expire(seen, int(self.seen_window_s) + 60)
        history = keys.user_key(self.prefix, keys.HISTORY, user_id)
        if event.weight < 0:
            # History explains hits ("because you liked X"): an item the user has since disliked must not.
            pipe.lrem(history, 0, event.item_id)
        if event.weight > 0:
            pipe.lpush(history, event.item_id)
            pipe.ltrim(history, 0, HISTORY_LEN - 1)

    def _bump_trending(self, events: Sequence[AppliedEvent]) -> None:
        """Add the positive events to trending (one round trip; outside any user's transaction: another slot)."""
        positive = [event for event in events if event.weight > 0]
        if not positive:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for event in positive:
                exponent = min((event.ts - TRENDING_EPOCH) / self.half_life_s, 1000.0)
                pipe.zincrby(keys.key(self.prefix, keys.TRENDING), math.pow(2.0, exponent) * event.weight,
                             event.item_id)
            pipe.execute()

    def defer(self, events: Sequence[tuple[str, AppliedEvent]]) -> None:
        """Queue events whose profile update could not be done (Elasticsearch, which holds the item
        vectors, did not answer); drain_pending applies them once it is back."""
        if events:
            self.redis.rpush(keys.key(self.prefix, keys.PENDING_PROFILE),
                             *[json.dumps([user, asdict(event)]) for user, event in events])

    def drain_pending(self, vectors_for: Callable[[list[str]], Mapping[str, np.ndarray]], batch: int = 500) -> int:
        """Apply deferred events in arrival order; returns how many were applied."""
        key = keys.key(self.prefix, keys.PENDING_PROFILE)
        applied = 0
        while True:
            raw = self.redis.lrange(key, 0, batch - 1)
            if not raw:
                return applied
            # An erasure scrubs its user's entries in place (indexer.privacy.SCRUBBED: positions must not
            # move under this LRANGE/LTRIM); entries of a user erased since they were deferred are skipped.
            entries = [entry for entry in (json.loads(r) for r in raw) if entry is not None]
            pending = tombstones.keep_records(self.redis, self.settings,
                                              [(user, AppliedEvent(**fields)) for user, fields in entries],
                                              lambda pair: (pair[0], pair[1].ts))
            vectors = vectors_for([event.item_id for _, event in pending])
            for user, event in pending:
                self.apply(user, vectors.get(event.item_id), event)
            # Trim only after applying: a crash in between re-applies at most one batch, never loses it.
            self.redis.ltrim(key, len(raw), -1)
            applied += len(raw)

    def seen(self, user_id: str, now: float | None = None) -> list[str]:
        """Items the user acted on within the seen window (newest first)."""
        now = now or time.time()
        raw = self.redis.zrevrangebyscore(keys.user_key(self.prefix, keys.SEEN, user_id), "+inf",
                                          now - self.seen_window_s)
        return reply_texts(raw)

    def history(self, user_id: str) -> list[str]:
        """Items of the user's recent positive events, newest first, without repeats."""
        raw = self.redis.lrange(keys.user_key(self.prefix, keys.HISTORY, user_id), 0, HISTORY_LEN - 1)
        return list(dict.fromkeys(reply_texts(raw)))

    def trending(self, size: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        excluded = set(exclude)
        raw = self.redis.zrevrange(keys.key(self.prefix, keys.TRENDING), 0, size + len(excluded) - 1, withscores=True)
        return [(member, score) for member, score in reply_scored(raw) if member not in excluded][:size]

    def replace(self, user_id: str, profile: Profile, events: Sequence[AppliedEvent]) -> None:
        """Overwrite one user's state with a rebuilt profile (used when rebuilding from the events index)."""
        with self.redis.pipeline(transaction=True) as pipe:
            for kind in (keys.PROFILE, keys.SEEN, keys.HISTORY):
                pipe.delete(keys.user_key(self.prefix, kind, user_id))
            pipe.hset(keys.user_key(self.prefix, keys.PROFILE, user_id), mapping=_fields(profile))
            for event in sorted(events, key=lambda e: e.ts):
                self._side_effects(pipe, user_id, event)
            pipe.execute()
        self._bump_trending(events)

    def user_ids(self) -> Iterator[str]:
        """Every user with a profile (SCAN: never blocks Redis)."""
        pattern = keys.key(self.prefix, keys.PROFILE, "{*}", "*")
        for key in self.redis.scan_iter(match=pattern, count=1000):
            yield keys.user_of(self.prefix, keys.PROFILE, reply_text(key))

    def clear_trending(self) -> None:
        self.redis.delete(keys.key(self.prefix, keys.TRENDING))
