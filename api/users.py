"""A user's data: `GET /v1/users/{id}/export` (what hybridrec holds) and `DELETE /v1/users/{id}` (erase it all)."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.auth import scope
from api.params import path_id
from api.services import services
from indexer import privacy

bp = Blueprint("users", __name__, url_prefix="/v1")


@bp.get("/users/<user_id>/export")
@scope("write_or_admin")
def export_user(user_id: str) -> Response:
    svc = services()
    return jsonify(privacy.export_user(svc.es, svc.redis, svc.settings, path_id(user_id, "user_id", item=False)))


@bp.delete("/users/<user_id>")
@scope("write_or_admin")
def erase_user(user_id: str) -> Response:
    """Synchronous: the answer counts what was deleted per store; a second call counts zeros."""
    svc = services()
    return jsonify(privacy.erase_user(svc.es, svc.redis, svc.settings, path_id(user_id, "user_id", item=False)))
