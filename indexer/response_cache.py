"""Cached responses in Redis: per profile version (an event invalidates them) and the last good answer,
served flagged as degraded while Elasticsearch is down."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from redis import Redis

from indexer import keys
from indexer.read_params import ReadParams
from indexer.settings import Settings
from indexer.telemetry import CACHE, timed

# A cold-start answer is trending items, which move with everyone's events and no profile version
# tracks them: keep it only briefly.
COLD_CACHE_TTL_S = 10
# The last good answer per user and parameters, served (flagged degraded) while Elasticsearch is down.
LAST_GOOD_TTL_S = 24 * 3600


class ResponseCache:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.prefix = settings.index_prefix
        self.ttl = settings.reco_cache_ttl

    def key(self, user_id: str | None, version: int | None, params: ReadParams, anchor: str | None,
            model: str = "") -> str:
        """Per profile and model version (an event or a promotion invalidates it); version None: the
        version-less last good answer."""
        digest = hashlib.sha256(params.model_dump_json().encode() + (anchor or "").encode()
                                + model.encode()).hexdigest()[:24]
        kind = keys.RECO if version is not None else keys.RECO_LAST
        if user_id:  # in the user's slot, beside the profile
            return keys.user_key(self.prefix, kind, user_id, digest, version)
        return keys.key(self.prefix, kind, digest, version, "-")

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached body for `key` (marked cached), or None; a no-op when caching is off."""
        if not self.ttl:
            return None
        with timed("redis", "cache_get"):
            raw = self.redis.get(key)
        CACHE.labels("hit" if raw else "miss").inc()
        if not raw:
            return None
        body: dict[str, Any] = json.loads(raw)
        body["cached"] = True
        return body

    def put(self, key: str, last_good_key: str, body: dict[str, Any]) -> None:
        """Store a fresh answer under its versioned key and as the last good answer."""
        if not self.ttl:
            return
        ttl = min(self.ttl, COLD_CACHE_TTL_S) if body.get("cold_start") else self.ttl
        encoded = json.dumps(body)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(key, encoded, ex=ttl)
            pipe.set(last_good_key, encoded, ex=LAST_GOOD_TTL_S)
            pipe.execute()

    def last_good(self, last_good_key: str) -> dict[str, Any] | None:
        raw = self.redis.get(last_good_key)
        return json.loads(raw) if raw else None
