"""Admin endpoints for collaborative models: train (a task), list versions, promote, roll back."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.auth import scope
from api.errors import json_body
from api.services import services
from indexer import model_registry as registry
from indexer.errors import InvalidInput
from indexer.task_routing import PROMOTE_MODEL, ROLLBACK_MODEL, TRAIN

bp = Blueprint("models", __name__, url_prefix="/v1/admin")


@bp.post("/train")
@scope("admin")
def start_training() -> tuple[Response, int]:
    body: Any = json_body() if request.data else {}
    if not isinstance(body, dict) or set(body) - {"promote"} or not isinstance(body.get("promote", True), bool):
        raise InvalidInput('the body is optional; if given, it is {"promote": true|false}')
    return jsonify(task_id=services().enqueue(TRAIN, body.get("promote", True))), 202


@bp.get("/models")
@scope("admin")
def list_models() -> Response:
    svc = services()
    pointer = registry.read_pointer(svc.es, svc.settings)
    return jsonify(serving=pointer.version, slot=pointer.slot, slots=pointer.slots,
                   rollback_to=pointer.history[-1] if pointer.history else None,
                   models=[m.as_dict() for m in registry.list_models(svc.es, svc.settings)])


@bp.post("/models/<int:version>/promote")
@scope("admin")
def start_promotion(version: int) -> tuple[Response, int]:
    return jsonify(task_id=services().enqueue(PROMOTE_MODEL, version)), 202


@bp.post("/models/rollback")
@scope("admin")
def start_model_rollback() -> tuple[Response, int]:
    return jsonify(task_id=services().enqueue(ROLLBACK_MODEL)), 202
