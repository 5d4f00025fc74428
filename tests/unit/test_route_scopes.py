"""Every route declares its scope on the view; a view that declares none is refused, keys or not."""
from __future__ import annotations

from typing import get_args

import pytest
from flask import Flask

from api import create_app
from api.auth import Scope, endpoint_scope
from indexer.settings import load_settings

# Building the app connects to nothing (clients connect on first use), so this needs no server.
SETTINGS = load_settings(es_url="http://127.0.0.1:1", redis_url="redis://127.0.0.1:1/0",
                         broker_url="redis://127.0.0.1:1/1", api_keys="ops:a-secret-of-20-chars:read+write+admin")


@pytest.fixture
def app() -> Flask:
    return create_app({"TESTING": True}, settings=SETTINGS)


def test_every_route_declares_its_scope(app: Flask) -> None:
    undeclared = sorted(rule.rule for rule in app.url_map.iter_rules() if endpoint_scope(app, rule.endpoint) is None)
    assert not undeclared, f"routes without a declared scope (use @scope(...) from api.auth): {undeclared}"
    assert {endpoint_scope(app, rule.endpoint) for rule in app.url_map.iter_rules()} <= set(get_args(Scope))


def test_the_scopes_the_routes_declare(app: Flask) -> None:
    declared = {rule.endpoint: endpoint_scope(app, rule.endpoint) for rule in app.url_map.iter_rules()}
    assert declared["health.health"] == declared["openapi.openapi"] == "open"
    assert declared["recommendations.recommendations"] == declared["items.task_status"] == "read"
    assert declared["items.put_item"] == declared["events.post_events"] == "write"
    assert declared["items.start_reindex"] == declared["models.start_training"] == "admin"


def test_a_view_without_a_scope_is_refused_even_with_a_valid_key(app: Flask) -> None:
    app.add_url_rule("/v1/admin/renamed", "renamed", lambda: "opened")
    response = app.test_client().get("/v1/admin/renamed", headers={"X-API-Key": "a-secret-of-20-chars"})
    assert response.status_code == 403
    assert "declares no scope" in response.get_json()["detail"]


def test_the_document_marks_exactly_the_open_routes_as_needing_no_key(app: Flask) -> None:
    from api.openapi import OPEN_PATHS, build_spec

    open_rules = {rule.rule for rule in app.url_map.iter_rules()
                  if endpoint_scope(app, rule.endpoint) == "open" and rule.endpoint != "static"}
    assert open_rules == OPEN_PATHS
    for path, operations in build_spec()["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            if path in OPEN_PATHS:
                assert operation["security"] == [], (method, path)
            else:
                assert operation["security"] and {"401", "403", "429"} <= set(operation["responses"]), (method, path)
