"""The OpenAPI 3.1 document the app serves at /openapi.json, built with apispec from the pydantic models
that validate requests (so the document and the validation cannot drift apart)."""
from __future__ import annotations

from typing import Any

from apispec import APISpec
from flask import Blueprint, Response, current_app, jsonify

from api.auth import scope
from api.events import MAX_EVENTS
from api.items import MAX_BULK_ITEMS
from api.params import LIST_PARAMS, ReadParams
from indexer.documents import ID_PATTERN, MAX_ID_CHARS, Item
from indexer.events import Event

bp = Blueprint("openapi", __name__)

PROBLEM = {"type": "object", "required": ["title", "status", "detail"], "properties": {
    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
    "detail": {"type": "string"}, "errors": {"type": "array"}}}
JSON_OBJECT = {"type": "object"}
# Paths any client may call: no key, no rate limit (api.auth's "open" scope).
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json"})
SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]


def _problem(description: str) -> dict[str, Any]:
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    return {"description": description, "content": {"application/problem+json": problem}}


def _ok(description: str, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {"schema": JSON_OBJECT}}},
            "400": _problem("invalid request"), "503": _problem("a backend did not answer in time")}


WRITE_REFUSED = ("invalid body: not JSON, nested too deeply, or beyond Elasticsearch's limits (ids over 512 UTF-8 "
                 "bytes, a version of 2**63 or more, updated_at before 1970 without a version, attributes nested "
                 "more than 20 objects deep or with a key path and value over 32,766 bytes); the detail names the "
                 "field, `errors` lists per-record reasons")


def _write_ok(description: str) -> dict[str, Any]:
    """A write endpoint's responses: accepted (202) or refused with the problem named (400)."""
    return {**_ok(description, "202"), "400": _problem(WRITE_REFUSED)}


def _read_parameters(exclude: set[str]) -> list[dict[str, Any]]:
    """Query parameters from ReadParams' JSON schema; list parameters repeat (or take commas)."""
    params = []
    for name, schema in ReadParams.model_json_schema()["properties"].items():
        if name in exclude:
            continue
        schema = dict(schema)
        schema.pop("title", None)
        if "anyOf" in schema:  # Optional[X]: the parameter is simply left out for None
            inner = next(s for s in schema.pop("anyOf") if s.get("type") != "null")
            schema = {**inner, **{k: v for k, v in schema.items() if k != "default" or v is not None}}
            if schema.get("default") is None:
                schema.pop("default", None)
        if name in LIST_PARAMS:
            schema.pop("default", None)
        params.append({"name": name, "in": "query", "required": False, "schema": schema,
                       **({"style": "form", "explode": True} if name in LIST_PARAMS else {})})
    return params


def _path_param(name: str) -> dict[str, Any]:
    # A user id is whatever events carry (whitespace allowed); item and task ids follow the item id rule.
    pattern = {} if name == "user_id" else {"pattern": ID_PATTERN}
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, **pattern}}


def build_spec() -> dict[str, Any]:
    spec = APISpec(title="hybridrec", version="0.1.0", openapi_version="3.1.0",
                   info={"description": "Real-time hybrid recommendations on Elasticsearch"})
    spec.components.schema("Problem", PROBLEM)
    item_schema = Item.model_json_schema(ref_template="#/components/schemas/{model}")
    spec.components.schema("Item", item_schema)
    # PUT /v1/items/{item_id} takes the id from the path: in its body the id may be left out.
    spec.components.schema("ItemBody", {**item_schema, "title": "ItemBody",
                                        "required": [f for f in item_schema.get("required", []) if f != "id"]})
    spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
    spec.components.security_scheme("Bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Event", Event.model_json_schema(ref_template="#/components/schemas/{model}"))
    item_ref = {"$ref": "#/components/schemas/Item"}
    event_ref = {"$ref": "#/components/schemas/Event"}

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    spec.path("/health", operations={"get": {"summary": "Liveness", "responses": {"200": {"description": "up"}}}})
    spec.path("/ready", operations={"get": {"summary": "Readiness (Elasticsearch and Redis answer)", "responses": {
        "200": {"description": "ready"}, "503": {"description": "not ready"}}}})
    spec.path("/metrics", operations={"get": {"summary": "Prometheus metrics",
                                              "responses": {"200": {"description": "text exposition format"}}}})
    spec.path("/v1/items/{item_id}", parameters=[_path_param("item_id")], operations={
        "put": {"summary": "Create or replace one item (enqueued)",
                "requestBody": body({"$ref": "#/components/schemas/ItemBody"}),
                "responses": _write_ok("accepted")},
        "delete": {"summary": "Delete one item (enqueued)", "responses": _ok("accepted", "202")}})
    items_array = {"type": "array", "items": item_ref, "minItems": 1, "maxItems": MAX_BULK_ITEMS}
    spec.path("/v1/items/bulk", operations={"post": {
        "summary": "Index a batch of items (enqueued); bad items are reported one by one",
        "requestBody": body({"oneOf": [items_array, {"type": "object", "required": ["items"],
                                                     "properties": {"items": items_array}}]}),
        "responses": _write_ok("accepted (bad items are listed in `errors`)")}})
    events_array = {"type": "array", "items": event_ref, "minItems": 1, "maxItems": MAX_EVENTS}
    spec.path("/v1/events", operations={"post": {
        "summary": "Record events; the user's profile changes at once",
        "requestBody": body({"oneOf": [event_ref, events_array, {"type": "object", "required": ["events"],
                                                                 "properties": {"events": events_array}}]}),
        "responses": _write_ok("accepted (bad events are listed in `errors`)")}})
    spec.path("/v1/users/{user_id}/recommendations", parameters=[_path_param("user_id")], operations={"get": {
        "summary": "Recommendations for a user (trending on cold start)",
        "parameters": _read_parameters({"user_id"}), "responses": _ok("ranked items")}})
    user_data = {"401": _problem("no valid API key"),
                 "403": _problem("the key has neither the write nor the admin scope")}
    spec.path("/v1/users/{user_id}", parameters=[_path_param("user_id")], operations={"delete": {
        "summary": "Erase everything held about a user: Redis profile, seen set, history, caches and queued "
                   "updates, events (every index version), reco-logs, snapshots; idempotent (a second call "
                   "counts zeros). Needs the write or admin scope",
        "responses": {**_ok("counts of what was deleted, per store"), **user_data}}})
    spec.path("/v1/users/{user_id}/export", parameters=[_path_param("user_id")], operations={"get": {
        "summary": "Everything held about a user, as JSON (profile, history, seen set, events, reco-logs, "
                   "snapshots, queued updates). Needs the write or admin scope",
        "responses": {**_ok("what is held (found: false when nothing)"), **user_data}}})
    spec.path("/v1/search", operations={"get": {
        "summary": "Hybrid search, personalised when user_id is given",
        "parameters": [p if p["name"] != "q" else {**p, "required": True, "schema": {**p["schema"], "minLength": 1}}
                       for p in _read_parameters(set())],
        "responses": _ok("ranked items")}})
    spec.path("/v1/items/{item_id}/similar", parameters=[_path_param("item_id")], operations={"get": {
        "summary": "Items similar to one item (the item itself excluded)",
        "parameters": _read_parameters({"q", "user_id"}),
        "responses": {**_ok("ranked items"), "404": _problem("unknown item")}}})
    spec.path("/v1/admin/reindex", operations={"post": {"summary": "Rebuild the items index (task)",
                                                        "responses": _ok("task enqueued", "202")}})
    spec.path("/v1/admin/rollback", operations={"post": {"summary": "Alias back to the previous version (task)",
                                                         "responses": _ok("task enqueued", "202")}})
    spec.path("/v1/admin/indices", operations={"get": {"summary": "Index versions and counts",
                                                       "responses": _ok("versions")}})
    spec.path("/v1/admin/train", operations={"post": {
        "summary": "Train a collaborative model from the events index, gate it, promote it if it passes (task)",
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "properties": {"promote": {"type": "boolean"}}}}}},
        "responses": {**_ok("task enqueued", "202"), "400": _problem("invalid body (not JSON, nested too deeply, "
                                                                     "or not {\"promote\": true|false})")}}})
    spec.path("/v1/admin/models", operations={"get": {"summary": "Model versions, metrics, states, serving pointer",
                                                      "responses": _ok("models")}})
    spec.path("/v1/admin/models/{version}/promote", parameters=[{"name": "version", "in": "path", "required": True,
                                                                 "schema": {"type": "integer", "minimum": 0}}],
              operations={"post": {"summary": "Serve a trained model version (task)",
                                   "responses": {**_ok("task enqueued", "202"),
                                                 "404": _problem("no such model version, or none servable")}}})
    spec.path("/v1/admin/models/rollback", operations={"post": {
        "summary": "Serve the model that served before the current one (task)",
        "responses": _ok("task enqueued", "202")}})
    spec.path("/v1/tasks/{task_id}", parameters=[_path_param("task_id")], operations={"get": {
        "summary": "Task state, progress and result; a failed task's result is {error, reason}, a short reason",
        "responses": _ok("task")}})
    return _with_shared_responses(spec.to_dict())


def _with_shared_responses(document: dict[str, Any]) -> dict[str, Any]:
    """What every operation can answer besides its own responses: without a valid key 401 (or 429 past
    the failed-key limit), without the scope 403, past the rate limit 429; a body over 16 MiB 413."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("413", _problem("body over 16 MiB"))
            if path in OPEN_PATHS:
                operation["security"] = []
                continue
            operation["security"] = SECURITY
            responses.setdefault("401", _problem("no valid API key"))
            responses.setdefault("403", _problem("the key lacks the scope this endpoint needs"))
            responses.setdefault("429", _problem("rate limit reached (see Retry-After)"))
    return document


@bp.get("/openapi.json")
@scope("open")
def openapi() -> Response:
    cached = current_app.extensions.get("hybridrec_openapi")
    if cached is None:
        cached = current_app.extensions["hybridrec_openapi"] = build_spec()
    return jsonify(cached)
