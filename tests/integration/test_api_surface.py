"""The API's served surface: OpenAPI document matches the routes, health, readiness, metrics, task status."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


def test_openapi_document_lists_every_route(app, client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops if method != "parameters"}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "openapi.openapi"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, f"{method} {path} is served but not documented"
    params = {p["name"] for p in doc["paths"]["/v1/users/{user_id}/recommendations"]["get"]["parameters"]}
    assert {"k", "page", "fusion", "mmr_lambda", "explain", "category"} <= params and "user_id" not in params


def test_health_ready_and_metrics(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"elasticsearch": True, "redis": True}
    client.get("/v1/users/nobody/recommendations?k=0")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "hybridrec_http_requests_total" in metrics
    assert re.search(r'hybridrec_http_requests_total\{endpoint="recommendations.recommendations",'
                     r'method="GET",status="400"\} [1-9]', metrics)


def test_unknown_task_is_pending_and_errors_are_problem_json(client):
    assert client.get("/v1/tasks/does-not-exist").get_json()["state"] == "PENDING"
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    wrong = client.put("/v1/items/a b", json={"title": "x"})
    assert wrong.status_code == 400 and "id" in wrong.get_json()["detail"]
    mismatch = client.put("/v1/items/a", json={"id": "b", "title": "x"})
    assert mismatch.status_code == 400 and "does not match" in mismatch.get_json()["detail"]


def test_core_node_has_no_rrf_retriever_so_fusion_happens_in_the_app(fresh, client, es, settings):
    from indexer.catalog import index_items
    from indexer.documents import Item
    from indexer.encoder import get_encoder
    from indexer.lifecycle import alias_name
    from indexer.server_fusion import server_rrf_available

    index_items(es, settings, [Item(id="a1", title="space opera", version=1),
                               Item(id="a2", title="kitchen pasta", version=1)], get_encoder(settings))
    es.indices.refresh(index=alias_name(settings, "items"))
    assert server_rrf_available(es, alias_name(settings, "items")) is False
    body = client.get("/v1/search?q=space&k=2").get_json()  # plain RRF over BM25 + query kNN
    assert body["fusion_side"] == "app" and body["items"][0]["id"] == "a1"
