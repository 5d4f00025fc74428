"""Catalog write endpoints: validate and enqueue (nothing is embedded on the request path), task status, admin."""
from __future__ import annotations

import time
from typing import Any

from celery.result import AsyncResult
from flask import Blueprint, Response, jsonify

from api.auth import scope
from api.errors import json_body, problem
from api.params import path_id
from api.services import services
from indexer import lifecycle
from indexer.documents import validate_items
from indexer.errors import HybridrecError, InvalidInput
from indexer.task_routing import DELETE_ITEMS, INDEX_ITEMS, REINDEX, ROLLBACK

bp = Blueprint("items", __name__, url_prefix="/v1")

MAX_BULK_ITEMS = 5_000
TASK_BATCH = 200
MAX_TASK_REASON_CHARS = 300


def _enqueue_items(raw: list[Any]) -> tuple[Response, int]:
    svc = services()
    valid, errors = validate_items(raw, max_text_chars=svc.settings.max_text_chars, stamp_missing=True)
    if not valid:
        detail = "; ".join(f"item {e.index}: {m}" for e in errors for m in e.errors) or "no items in the request"
        return problem(400, "Invalid items", detail, accepted=0, task_ids=[], errors=[e.as_dict() for e in errors]), 400
    payload = [item.model_dump(mode="json", exclude_none=True) for item in valid]
    task_ids = [svc.enqueue(INDEX_ITEMS, payload[i:i + TASK_BATCH]) for i in range(0, len(payload), TASK_BATCH)]
    return jsonify(accepted=len(valid), task_ids=task_ids, errors=[e.as_dict() for e in errors]), 202


@bp.put("/items/<item_id>")
@scope("write")
def put_item(item_id: str) -> tuple[Response, int]:
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidInput("the body must be one item object")
    if "id" in body and body["id"] != item_id:
        raise InvalidInput(f"body id {body['id']!r} does not match the URL id {item_id!r}")
    return _enqueue_items([{**body, "id": item_id}])


@bp.post("/items/bulk")
@scope("write")
def bulk_items() -> tuple[Response, int]:
    body = json_body()
    raw = body.get("items") if isinstance(body, dict) else body
    if not isinstance(raw, list):
        raise InvalidInput('the body must be {"items": [...]} or a JSON array of items')
    if len(raw) > MAX_BULK_ITEMS:
        raise InvalidInput(f"{len(raw)} items in one request; the limit is {MAX_BULK_ITEMS}")
    return _enqueue_items(raw)


@bp.delete("/items/<item_id>")
@scope("write")
def delete_item(item_id: str) -> tuple[Response, int]:
    task_id = services().enqueue(DELETE_ITEMS, [path_id(item_id, "item_id")], int(time.time() * 1000))
    return jsonify(accepted=1, task_ids=[task_id]), 202


@bp.post("/admin/reindex")
@scope("admin")
def start_reindex() -> tuple[Response, int]:
    return jsonify(task_id=services().enqueue(REINDEX)), 202


@bp.post("/admin/rollback")
@scope("admin")
def start_rollback() -> tuple[Response, int]:
    return jsonify(task_id=services().enqueue(ROLLBACK)), 202


@bp.get("/admin/indices")
@scope("admin")
def indices() -> Response:
    svc = services()
    versions = lifecycle.list_versions(svc.es, svc.settings)
    return jsonify(alias=lifecycle.alias_name(svc.settings, "items"),
                   versions=[v.__dict__ for v in versions])


def task_error(exc: BaseException) -> dict[str, str]:
    """A failed task as its readers see it: the kind and a short reason. A domain error's message is meant
    for the caller; anything else (a client error's repr names nodes and headers) stays in the worker log."""
    reason = exc.message if isinstance(exc, HybridrecError) else "the task failed; the worker log has the details"
    return {"error": type(exc).__name__, "reason": reason[:MAX_TASK_REASON_CHARS]}


@bp.get("/tasks/<task_id>")
@scope("read")
def task_status(task_id: str) -> Response:
    result: AsyncResult[Any] = AsyncResult(path_id(task_id, "task_id"), app=services().celery)
    # Beside Celery's own states, a task may report PROGRESS (update_state in workers.tasks).
    state: str = result.state
    info: Any = result.info
    if isinstance(info, BaseException):
        info = task_error(info)
    return jsonify(id=task_id, state=state, result=info if result.ready() else None,
                   progress=info if state == "PROGRESS" else None)
