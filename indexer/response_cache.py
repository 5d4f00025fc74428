"""Cached responses in Redis: one entry per user and request parameters, stamped with the profile and model
versions it was computed for (a read fetches it beside the profile and compares them, so an event
invalidates it at once), and the last good answer, served flagged as degraded while Elasticsearch is down."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline

from indexer import keys
from indexer.clients import reply_bytes
from indexer.read_params import ReadParams
from indexer.settings import Settings
from indexer.telemetry import CACHE

# A cold-start answer is trending items, which move with everyone's events and no profile version
# tracks them: keep it only briefly.
COLD_CACHE_TTL_S = 10
# The last good answer per user and parameters, served (flagged degraded) while Elasticsearch is down.
LAST_GOOD_TTL_S = 24 * 3600
# The entry's hash fields: the profile version and the serving model it was computed for, and the body.
FIELDS = ("profile_version", "model", "body")
# Writers race (a request and a prefetch computing for versions 5 and 6): an entry never replaces one
# computed for a newer profile version, so the list the next request wants is not overwritten by an older
# one. A profile rebuilt to a lower version is only cached again once the newer entry expires.
# One script writes the entry and the last good answer (KEYS[2], always): one round trip, and no pipeline,
# which a Redis Cluster client cannot run a script in. Both keys share a hash tag (the user's, or the
# parameters' digest), so the script's keys are in one slot.
PUT_SCRIPT = """
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[5])
local stored = tonumber(redis.call('HGET', KEYS[1], 'profile_version'))
if stored and stored > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'profile_version', ARGV[1], 'model', ARGV[2], 'body', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class Entry:
    """A cached answer and the versions it was computed for."""

    profile_version: int
    model: str
    body: bytes

    def serves(self, profile_version: int, model: str) -> bool:
        """Only for the very profile and model versions it was computed for: never an older list."""
        return self.profile_version == profile_version and self.model == model


class ResponseCache:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.prefix = settings.index_prefix
        self.ttl = settings.reco_cache_ttl

    def _digest(self, params: ReadParams, anchor: str | None) -> str:
        return hashlib.sha256(params.model_dump_json().encode() + (anchor or "").encode()).hexdigest()[:24]

    def key(self, user_id: str | None, params: ReadParams, anchor: str | None) -> str:
        """The entry for this user (or anchor item) and these parameters as the request gave them: the
        versions it depends on are stamped inside, so that one round trip can fetch it with the profile."""
        return self._key(keys.RECO, user_id, params, anchor)

    def last_good_key(self, user_id: str | None, params: ReadParams, anchor: str | None) -> str:
        return self._key(keys.RECO_LAST, user_id, params, anchor)

    def _key(self, kind: str, user_id: str | None, params: ReadParams, anchor: str | None) -> str:
        if user_id:  # in the user's slot, beside the profile: one user's request reads one slot
            return keys.user_key(self.prefix, kind, user_id, self._digest(params, anchor))
        return keys.key(self.prefix, kind, "{" + self._digest(params, anchor) + "}", "-")

    def queue_get(self, pipe: Pipeline, key: str) -> bool:
        """Add the entry's read to `pipe` (the read path's one round trip); False, and nothing added,
        when caching is off."""
        if not self.ttl:
            return False
        pipe.hmget(key, FIELDS)
        return True

    @staticmethod
    def entry(reply: list[Any]) -> Entry | None:
        """The entry from its HMGET reply; None where there is none."""
        version, model, body = reply
        if version is None or body is None:
            return None
        return Entry(int(version), reply_bytes(model).decode() if model is not None else "", reply_bytes(body))

    @staticmethod
    def hit(entry: Entry | None, profile_version: int, model: str) -> dict[str, Any] | None:
        """The cached body (marked cached) if the entry serves these versions, else None (counted)."""
        if entry is None or not entry.serves(profile_version, model):
            CACHE.labels("miss").inc()
            return None
        CACHE.labels("hit").inc()
        body: dict[str, Any] = json.loads(entry.body)
        body["cached"] = True
        return body

    def put(self, key: str, last_good_key: str, profile_version: int, model: str, body: dict[str, Any]) -> None:
        """Store a fresh answer under its key (unless one for a newer profile is there) and as the last
        good answer, in one round trip."""
        if not self.ttl:
            return
        ttl = min(self.ttl, COLD_CACHE_TTL_S) if body.get("cold_start") else self.ttl
        # EVAL, not a registered script: EVALSHA first needs a SCRIPT LOAD, one more round trip per process.
        self.redis.eval(PUT_SCRIPT, 2, key, last_good_key, profile_version, model, json.dumps(body), ttl,
                        LAST_GOOD_TTL_S)

    def forget(self, user_id: str | None, params: ReadParams, anchor: str | None) -> None:
        """Delete the entry and the last good answer for this user and parameters."""
        self.redis.delete(self.key(user_id, params, anchor), self.last_good_key(user_id, params, anchor))

    def last_good(self, last_good_key: str) -> dict[str, Any] | None:
        raw = self.redis.get(last_good_key)
        return json.loads(raw) if raw else None
