"""A user's data: `GET /v1/users/{id}/export` (what hybridrec holds) and `DELETE /v1/users/{id}` (erase it all)."""
from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify

from api.auth import scope
from api.services import services
from indexer import privacy
from indexer.documents import ID_PATTERN, MAX_ID_CHARS
from indexer.errors import InvalidInput

bp = Blueprint("users", __name__, url_prefix="/v1")


def _checked(user_id: str) -> str:
    """The user id as events carry it; anything no event could have carried is a 400, not an empty answer."""
    if len(user_id) > MAX_ID_CHARS or not re.fullmatch(ID_PATTERN, user_id):
        raise InvalidInput(f"user_id: 1 to {MAX_ID_CHARS} characters, no whitespace or '/'")
    return user_id


@bp.get("/users/<user_id>/export")
@scope("write_or_admin")
def export_user(user_id: str) -> Response:
    svc = services()
    return jsonify(privacy.export_user(svc.es, svc.redis, svc.settings, _checked(user_id)))


@bp.delete("/users/<user_id>")
@scope("write_or_admin")
def erase_user(user_id: str) -> Response:
    """Synchronous: the answer counts what was deleted per store; a second call counts zeros."""
    svc = services()
    return jsonify(privacy.erase_user(svc.es, svc.redis, svc.settings, _checked(user_id)))
