"""Read endpoints: user recommendations, personalised search, similar items."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.params import parse_params
from api.recommend import Engine
from api.services import services
from indexer.errors import InvalidInput

bp = Blueprint("recommendations", __name__, url_prefix="/v1")


@bp.get("/users/<user_id>/recommendations")
def recommendations(user_id: str) -> Response:
    if "user_id" in request.args:
        raise InvalidInput("user_id comes from the URL path, not the query string")
    params = parse_params(request.args)
    return jsonify(Engine(services()).recommend(user_id, params))


@bp.get("/search")
def search() -> Response:
    params = parse_params(request.args)
    if not params.q:
        raise InvalidInput("q (the search text) is required and must not be blank")
    return jsonify(Engine(services()).recommend(params.user_id, params))


@bp.get("/items/<item_id>/similar")
def similar(item_id: str) -> Response:
    params = parse_params(request.args)
    if params.q or params.user_id:
        raise InvalidInput("similar items take neither q nor user_id")
    return jsonify(Engine(services()).similar(item_id, params))
