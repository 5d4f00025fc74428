"""One JSON error shape (RFC 9457 problem+json) for every 4xx and 5xx; no stack traces in responses."""
from __future__ import annotations

import logging

from elasticsearch import ApiError, ConnectionTimeout
from elasticsearch import ConnectionError as ESConnectionError
from flask import Flask, Response, jsonify
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from indexer.documents import describe_validation
from indexer.errors import BackendUnavailable, Conflict, HybridrecError, InvalidInput, NotFound

log = logging.getLogger(__name__)



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


def init_app(app: Flask) -> None:
    @app.errorhandler(HybridrecError)
    def _domain(exc: HybridrecError) -> Response:
        status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 500)
        return problem(status, type(exc).__name__, exc.message)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response:
        errors = describe_validation(exc, "request")
        return problem(400, "Invalid request", "; ".join(errors), errors=errors)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return problem(exc.code or 500, exc.name, exc.description or exc.name)

    @app.errorhandler(ESConnectionError)
    @app.errorhandler(ConnectionTimeout)
    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    def _backend(exc: Exception) -> Response:
        log.warning("backend unavailable: %s", exc)
        return problem(503, "Backend unavailable", f"{type(exc).__name__}: a backend did not answer in time")

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
