"""Served lists are logged with their request id, clicks are attributed back, CTR per strategy is one
aggregation; request ids and metrics are exposed."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture()
def catalog(fresh, es, settings):
    from indexer.catalog import index_items
    from indexer.documents import Item
    from indexer.encoder import get_encoder
    from indexer.lifecycle import alias_name

    items = [Item(id=f"o{i}", title=f"{t} item {i}", description=f"about {t}", category=t, version=1)
             for i, t in enumerate(["space", "cooking", "garden", "football"] * 4)]
    index_items(es, settings, items, get_encoder(settings))
    es.indices.refresh(index=alias_name(settings, "items"))


def test_reco_logs_clicks_and_ctr_by_strategy(catalog, worker, client, es, settings):
    from celery.result import AsyncResult

    from indexer.lifecycle import alias_name
    from workers.celery_app import app as celery_app
    from workers.cli import main

    tasks = []
    for n in range(3):  # personalised users, rrf by default
        tasks.append(client.post("/v1/events", json={"user_id": f"p{n}", "item_id": "o0", "type": "like"}).get_json())
    served = []
    for n in range(3):
        served.append(client.get(f"/v1/users/p{n}/recommendations?k=3&fusion={'linear' if n == 2 else 'rrf'}"))
    for n in range(4):
        served.append(client.get(f"/v1/users/cold{n}/recommendations?k=3"))  # trending
    bodies = [r.get_json() for r in served]
    assert all(r.headers["X-Request-ID"] == b["request_id"] for r, b in zip(served, bodies, strict=True))
    assert [b["strategy"] for b in bodies] == ["rrf", "rrf", "linear"] + ["trending"] * 4
    # Clicks carrying request ids: 2 of the 2 rrf lists, 0 of the linear one, 1 of the 4 trending lists.
    clicks = [(bodies[0], "click"), (bodies[1], "purchase"), (bodies[3], "click"), (bodies[2], "view")]
    for body, kind in clicks:
        response = client.post("/v1/events", json={"user_id": body["user_id"], "item_id": body["items"][0]["id"],
                                                   "type": kind, "request_id": body["request_id"]})
        tasks.append(response.get_json())
    for task in tasks:
        result = AsyncResult(task["task_id"], app=celery_app).get(timeout=120)
        for follow_up in result["follow_up"]:  # click attribution runs after the events are written
            AsyncResult(follow_up, app=celery_app).get(timeout=120)
    es.indices.refresh(index=alias_name(settings, "reco_logs"))
    logged = es.get(index=alias_name(settings, "reco_logs"), id=bodies[0]["request_id"])["_source"]
    assert logged["clicked"] == 1 and logged["items"] == [i["id"] for i in bodies[0]["items"]]
    assert logged["user_id"] == "p0" and logged["endpoint"] == "recommendations" and logged["k"] == 3
    from indexer.reco_logs import ctr_by_strategy

    rows = {r["strategy"]: r for r in ctr_by_strategy(es, settings)}
    assert rows["rrf"] == {"strategy": "rrf", "served": 2, "clicked": 2, "ctr": 1.0}
    assert rows["linear"]["clicked"] == 0 and rows["linear"]["served"] == 1  # a view is not a click
    assert rows["trending"] == {"strategy": "trending", "served": 4, "clicked": 1, "ctr": 0.25}
    assert main(["report", "ctr"]) == 0


def test_metrics_expose_latency_cache_and_queues(catalog, client):
    client.post("/v1/events", json={"user_id": "m1", "item_id": "o1", "type": "like"})
    client.get("/v1/users/m1/recommendations?k=3")
    client.get("/v1/users/m1/recommendations?k=3")  # cached
    text = client.get("/metrics").get_data(as_text=True)
    assert 'hybridrec_backend_call_seconds_count{backend="elasticsearch",operation="msearch"}' in text
    assert 'hybridrec_backend_call_seconds_count{backend="redis",operation="load_profile"}' in text
    assert 'hybridrec_reco_cache_total{result="hit"}' in text
    assert 'hybridrec_queue_depth{queue="events"}' in text
    assert 'hybridrec_http_request_seconds_bucket{endpoint="recommendations.recommendations"' in text


def test_worker_serves_task_metrics(fresh, worker):
    import urllib3

    from tests.helpers import WORKER_METRICS_PORT
    from workers.tasks import index_items

    index_items.delay([{"id": "w1", "title": "metrics item", "version": 1}]).get(timeout=120)
    text = urllib3.PoolManager().request("GET", f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics",
                                         timeout=5).data.decode()
    assert 'hybridrec_task_seconds_count{task="hybridrec.index_items"}' in text
    assert 'hybridrec_task_outcomes_total{outcome="success",task="hybridrec.index_items"}' in text


def test_logs_are_json_lines_with_the_request_id(app):
    import json
    import logging

    from flask import g

    from api.observability import RequestIdFilter, configure_logging

    configure_logging()
    handler = logging.getLogger().handlers[0]
    with app.test_request_context("/v1/users/u/recommendations"):
        g.request_id = "req-123"
        record = logging.LogRecord("api.test", logging.WARNING, __file__, 1, "served %s", ("list",), None)
        RequestIdFilter().filter(record)
        line = json.loads(handler.format(record))
    assert line["message"] == "served list" and line["request_id"] == "req-123" and line["level"] == "WARNING"
