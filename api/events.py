"""POST /v1/events: the user's profile changes at once (Redis); the durable write is enqueued first."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from api.auth import scope
from api.errors import json_body, problem
from api.services import services
from indexer import search
from indexer.errors import InvalidInput
from indexer.events import event_document, first_sightings, validate_events
from indexer.lifecycle import alias_name
from indexer.profile_store import AppliedEvent, ProfileStore
from indexer.recommender import ES_DOWN
from indexer.task_routing import PREFETCH, RECORD_EVENTS

bp = Blueprint("events", __name__, url_prefix="/v1")
log = logging.getLogger(__name__)

MAX_EVENTS = 1_000


@bp.post("/events")
@scope("write")
def post_events() -> tuple[Response, int]:
    body = json_body()
    raw = body.get("events") if isinstance(body, dict) and "events" in body else body
    raw = raw if isinstance(raw, list) else [raw]
    if len(raw) > MAX_EVENTS:
        raise InvalidInput(f"{len(raw)} events in one request; the limit is {MAX_EVENTS}")
    valid, errors = validate_events(raw)
    if not valid:
        # The API's one error shape, with the per-event reasons kept as an extension member.
        detail = "; ".join(message for e in errors for message in e.errors) or "no events in the request"
        return problem(400, "Invalid events", detail, accepted=0, errors=[e.as_dict() for e in errors]), 400
    svc = services()
    # Durable first: once the task is in the broker the event cannot be lost, then the hot profile.
    task_id = svc.enqueue(RECORD_EVENTS, [event_document(e) for e in valid])
    store = ProfileStore(svc.redis, svc.settings)
    # An event sent again (same event_id) is stored once (its id is the document _id): apply it once too.
    new = first_sightings(svc.redis, svc.settings, valid)
    applied = [(e.user_id, AppliedEvent(e.item_id, e.weight, e.epoch(), e.session_id)) for e in new]
    try:
        vectors = search.item_vectors(svc.es, alias_name(svc.settings, "items"), [e.item_id for e in new])
    except ES_DOWN:
        # The event is already safe in the broker; its profile update waits for Elasticsearch
        # (the item vectors live there) and is applied by the worker once the durable write succeeds.
        store.defer(applied)
        return jsonify(accepted=len(valid), task_id=task_id, profile_versions={}, profile_pending=True,
                       duplicates=len(valid) - len(new), errors=[e.as_dict() for e in errors]), 202
    versions: dict[str, int] = {}
    for user_id, event in applied:
        versions[user_id] = store.apply(user_id, vectors.get(event.item_id), event).version
    if versions and svc.settings.prefetch:
        # The next default list, computed by a worker for the profiles just written (off: nothing sent).
        try:
            svc.enqueue(PREFETCH, sorted(versions))
        except (OperationalError, RedisError) as exc:  # the events are accepted; only the head start is lost
            log.warning("prefetch not queued: %s", exc)
    unknown = sorted({e.item_id for e in new if e.item_id not in vectors})
    return jsonify(accepted=len(valid), task_id=task_id, profile_versions=versions, profile_pending=False,
                   unknown_items=unknown, duplicates=len(valid) - len(new), errors=[e.as_dict() for e in errors]), 202
