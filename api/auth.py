"""API keys with scopes (read, write, admin), compared in constant time, and per-key rate limits on Redis."""
from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from limits import parse as parse_limit
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import TooManyRequests

from api.errors import Forbidden, Unauthorized
from indexer import keys as redis_keys  # "keys" here are API keys
from indexer.settings import Settings, parse_api_keys

log = logging.getLogger(__name__)

# What a view needs: "open" (no key, no rate limit: probes and the API document), an API-key scope, or
# "write_or_admin" (a key with either: a user's own data, exported or erased).
Scope = Literal["open", "read", "write", "admin", "write_or_admin"]
# The key scopes that satisfy each requirement.
SATISFIED_BY: dict[str, frozenset[str]] = {"write_or_admin": frozenset({"write", "admin"})}
SCOPE_ATTRIBUTE = "hybridrec_scope"
# Flask's own endpoints, which no view of ours declares (the static files, where there is a folder).
FRAMEWORK_OPEN_ENDPOINTS = frozenset({"static"})

View = TypeVar("View", bound=Callable[..., Any])
# Requests with a missing or wrong API key, per client address: guessing keys is limited too (a valid
# key's requests count against that key's own limit instead).
FAILED_KEY_LIMIT = parse_limit("30/minute")


def scope(required: Scope) -> Callable[[View], View]:
    """Declare the scope a view needs, on the view itself; a view that declares none is denied."""
    def declare(view: View) -> View:
        setattr(view, SCOPE_ATTRIBUTE, required)
        return view
    return declare


def endpoint_scope(app: Flask, endpoint: str) -> Scope | None:
    """The scope an endpoint's view declares, or None where it declares none."""
    if endpoint in FRAMEWORK_OPEN_ENDPOINTS:
        return "open"
    declared: Scope | None = getattr(app.view_functions.get(endpoint), SCOPE_ATTRIBUTE, None)
    return declared


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
        if endpoint is None:  # no route matched: the 404 needs no key
            return
        required = endpoint_scope(app, endpoint)
        if required is None:
            # Renaming or adding a view must never open it: a view without a declared scope is refused.
            raise Forbidden(f"endpoint {endpoint!r} declares no scope")
        if not keys or required == "open":
            return
        presented = _presented_key()
        name = _match(presented, keys) if presented else None
        if name is None:
            if required == "read" and settings.open_reads:
                return
            _count_failed_key(app, redis_keys.key(settings.index_prefix, redis_keys.RATE_LIMIT))
            raise Unauthorized("a valid API key is required (X-API-Key header or Authorization: Bearer)")
        g.api_key_name = name
        accepted = SATISFIED_BY.get(required, frozenset({required}))
        if not accepted & keys[name][1]:
            needed = " or ".join(repr(s) for s in sorted(accepted))
            raise Forbidden(f"API key {name!r} lacks the {needed} scope this endpoint needs")

    def identity() -> str:
        return f"key:{g.get('api_key_name')}" if g.get("api_key_name") else f"addr:{request.remote_addr}"

    # Flask-Limiter declares str | int values; its Redis storage hands them to redis-py, which takes float seconds.
    storage_options: dict[str, Any] = {"socket_timeout": settings.redis_timeout,
                                       "socket_connect_timeout": settings.redis_timeout}
    # No X-RateLimit-* headers: the limiter reads its window back for them (GET and TTL, two more Redis
    # round trips on every request, beside its one INCR). A 429 still says when to retry (below).
    limiter = Limiter(
        identity, app=app, default_limits=[settings.rate_limit], storage_uri=settings.redis_url,
        storage_options=storage_options, strategy="fixed-window", headers_enabled=False,
        key_prefix=redis_keys.key(settings.index_prefix, redis_keys.RATE_LIMIT),
        # Redis down must not take the API down with it: limits are skipped, requests still served.
        swallow_errors=True, default_limits_exempt_when=lambda: request.endpoint is not None
        and endpoint_scope(app, request.endpoint) == "open",
    )

    @app.after_request
    def _retry_after(response: Response) -> Response:
        """A 429 of the limiter's says when its window reopens: at least 1 s (a client told
        "Retry-After: 0" retries at once into the same closed window). Only this answer reads the window."""
        limit = limiter.current_limit
        if response.status_code == 429 and "Retry-After" not in response.headers and limit is not None:
            try:
                reset = limit.reset_at
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("rate-limit window not read for Retry-After: %s", exc)
                reset = int(time.time()) + 1
            response.headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
        return response

    return limiter


def _count_failed_key(app: Flask, namespace: str) -> None:
    """One more request without a valid key from this address (counted under this stack's rate-limit key
    prefix); past FAILED_KEY_LIMIT, a 429 instead of the 401. Redis unreachable: not counted (as the
    limiter itself does), the 401 still answers."""
    limiter: Limiter | None = app.extensions.get("hybridrec_limiter")
    if limiter is None or not limiter.enabled:
        return
    address = request.remote_addr or "-"
    try:
        if limiter.limiter.hit(FAILED_KEY_LIMIT, namespace, "failed-key", address):
            return
        reset = limiter.limiter.get_window_stats(FAILED_KEY_LIMIT, namespace, "failed-key", address).reset_time
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("failed-key limit not checked: %s", exc)
        return
    raise TooManyRequests("too many requests with a missing or wrong API key from this address",
                          retry_after=max(1, math.ceil(reset - time.time())))
