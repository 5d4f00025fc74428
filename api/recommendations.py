"""Read endpoints: user recommendations, personalised search, similar items."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from api.auth import scope
from api.params import ReadParams, parse_params, path_id
from api.services import services
from indexer.errors import InvalidInput
from indexer.reco_logs import log_document

bp = Blueprint("recommendations", __name__, url_prefix="/v1")


@bp.get("/users/<user_id>/recommendations")
@scope("read")
def recommendations(user_id: str) -> Response:
    if "user_id" in request.args:
        raise InvalidInput("user_id comes from the URL path, not the query string")
    params = parse_params(request.args)
    user = path_id(user_id, "user_id", item=False)
    return _served("recommendations", services().recommender.recommend(user, params), params)


@bp.get("/search")
@scope("read")
def search() -> Response:
    params = parse_params(request.args)
    if not params.q:
        raise InvalidInput("q (the search text) is required and must not be blank")
    return _served("search", services().recommender.recommend(params.user_id, params), params)


@bp.get("/items/<item_id>/similar")
@scope("read")
def similar(item_id: str) -> Response:
    params = parse_params(request.args)
    if params.q or params.user_id:
        raise InvalidInput("similar items take neither q nor user_id")
    return _served("similar", services().recommender.similar(path_id(item_id, "item_id"), params), params)


def _served(endpoint: str, body: dict[str, Any], params: ReadParams) -> Response:
    """Tag the list with the request id (clients send it back with clicks) and queue its log entry: this
    process's log writer pushes it to Redis off the request path, the index write happens in the workers."""
    body["request_id"] = g.request_id
    services().reco_logs.add(log_document(g.request_id, endpoint, body, params.k, datetime.now(UTC).isoformat()))
    return jsonify(body)
