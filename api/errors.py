"""One JSON error shape (RFC 9457 problem+json) for every 4xx and 5xx; no stack traces in responses."""
from __future__ import annotations

import logging
from typing import Any

from elasticsearch import ApiError, ConnectionTimeout
from elasticsearch import ConnectionError as ESConnectionError
from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from indexer.clients import REDIS_CLUSTER_TRANSIENT
from indexer.documents import describe_validation
from indexer.errors import BackendUnavailable, Conflict, HybridrecError, InvalidInput, NotFound

log = logging.getLogger(__name__)

DEEP_JSON = "the JSON body is nested too deeply"


class Unauthorized(HybridrecError):
    """No valid API key (HTTP 401)."""


class Forbidden(HybridrecError):
    """The key lacks the scope the endpoint needs (HTTP 403)."""


STATUS = {InvalidInput: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, Conflict: 409,
          BackendUnavailable: 503}


def problem(status: int, title: str, detail: str, **extra: object) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def json_body() -> Any:
    """The request's JSON body. Not JSON, or nested so deeply that the parser gives up (a RecursionError,
    which is no ValueError and would otherwise be a 500), is the client's 400; a body over the size limit
    is a 413, streamed (chunked, no Content-Length) or not."""
    limit = request.max_content_length
    if limit is not None and not request.content_length and len(request.get_data(cache=True)) >= limit:
        # A sized body over the limit is refused before it is read; a streamed one is cut at the limit
        # instead, and would then fail to parse as a misleading 400.
        raise RequestEntityTooLarge(f"the body is {limit} bytes or more; the limit is {limit - 1} bytes")
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise InvalidInput(DEEP_JSON) from None
    if body is None:
        raise InvalidInput("the request body must be JSON (Content-Type: application/json)")
    return body


def init_app(app: Flask) -> None:
    @app.errorhandler(HybridrecError)
    def _domain(exc: HybridrecError) -> Response:
        status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 500)
        return problem(status, type(exc).__name__, exc.message)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response:
        errors = describe_validation(exc, "request")
        return problem(400, "Invalid request", "; ".join(errors), errors=errors)

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        # A body that parsed can still be deep enough for a later step to give up on: still bad input.
        log.warning("request refused, nested too deeply: %s", request.path)
        return problem(400, "Invalid request", DEEP_JSON)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        response = problem(exc.code or 500, exc.name, exc.description or exc.name)
        # What the exception says besides its body: Allow on a 405, Retry-After on a 429 or 503.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(ESConnectionError)
    @app.errorhandler(ConnectionTimeout)
    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    def _backend(exc: Exception) -> Response:
        log.warning("backend unavailable: %s", exc)
        return problem(503, "Backend unavailable", f"{type(exc).__name__}: a backend did not answer in time")

    for failover in REDIS_CLUSTER_TRANSIENT:
        app.register_error_handler(failover, _backend)

    @app.errorhandler(ApiError)
    def _es_api(exc: ApiError) -> Response:
        if exc.status_code == 404:
            return problem(404, "Not found", f"Elasticsearch: {exc.message} (has `hybridrec init` run?)")
        if exc.status_code == 429 or exc.status_code >= 500:
            return problem(503, "Backend unavailable", f"Elasticsearch answered {exc.status_code}; retry later")
        log.error("Elasticsearch refused a request: %s", exc)
        return problem(500, "Internal error", "Elasticsearch refused a request; it has been logged")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged")
