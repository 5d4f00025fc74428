"""API keys with scopes (read, write, admin), compared in constant time, and per-key rate limits on Redis."""
from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Flask, g, request
from flask_limiter import Limiter

from api.errors import Forbidden, Unauthorized
from indexer import keys as redis_keys  # "keys" here are API keys
from indexer.settings import Settings, parse_api_keys

log = logging.getLogger(__name__)

OPEN_ENDPOINTS = {"health.health", "health.ready", "health.metrics", "openapi.openapi", "static"}
# Everything not listed needs "read"; unknown endpoints (404s) need nothing.
SCOPE_BY_ENDPOINT = {
    "items.put_item": "write", "items.bulk_items": "write", "items.delete_item": "write",
    "events.post_events": "write",
    "items.start_reindex": "admin", "items.start_rollback": "admin", "items.indices": "admin",
    "models.start_training": "admin", "models.list_models": "admin", "models.start_promotion": "admin",
    "models.start_model_rollback": "admin",
}


def _presented_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def _match(presented: str, keys: dict[str, tuple[str, frozenset[str]]]) -> str | None:
    """Name of the key whose secret equals `presented`; every key is compared, in constant time."""
    found = None
    for name, (secret, _) in keys.items():
        if hmac.compare_digest(presented.encode(), secret.encode()):
            found = name
    return found


def init_app(app: Flask, settings: Settings) -> Limiter:
    keys = parse_api_keys(settings.api_keys) if settings.api_keys else {}
    if not keys:
        log.warning("HYBRIDREC_API_KEYS is not set: the API accepts every request (development only)")

    @app.before_request
    def _authenticate() -> None:
        g.api_key_name = None
        endpoint = request.endpoint
        if not keys or endpoint is None or endpoint in OPEN_ENDPOINTS:
            return
        scope = SCOPE_BY_ENDPOINT.get(endpoint, "read")
        presented = _presented_key()
        name = _match(presented, keys) if presented else None
        if name is None:
            if scope == "read" and settings.open_reads:
                return
            raise Unauthorized("a valid API key is required (X-API-Key header or Authorization: Bearer)")
        g.api_key_name = name
        if scope not in keys[name][1]:
            raise Forbidden(f"API key {name!r} lacks the {scope!r} scope this endpoint needs")

    def identity() -> str:
        return f"key:{g.get('api_key_name')}" if g.get("api_key_name") else f"addr:{request.remote_addr}"

    # Flask-Limiter declares str | int values; its Redis storage hands them to redis-py, which takes float seconds.
    storage_options: dict[str, Any] = {"socket_timeout": settings.redis_timeout,
                                       "socket_connect_timeout": settings.redis_timeout}
    return Limiter(
        identity, app=app, default_limits=[settings.rate_limit], storage_uri=settings.redis_url,
        storage_options=storage_options, strategy="fixed-window", headers_enabled=True,
        key_prefix=redis_keys.key(settings.index_prefix, redis_keys.RATE_LIMIT),
        # Redis down must not take the API down with it: limits are skipped, requests still served.
        swallow_errors=True, default_limits_exempt_when=lambda: request.endpoint in OPEN_ENDPOINTS,
    )
