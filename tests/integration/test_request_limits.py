"""Hostile request shapes get a clear 4xx, never a 500, and failed tasks tell readers a short reason only.
Real app, Redis and Celery result backend."""
from __future__ import annotations

import uuid
import warnings

import pytest

pytestmark = pytest.mark.integration

DEEP = "[" * 1000 + "]" * 1000  # 2 KB; Python's parser gives up with a RecursionError
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000


@pytest.mark.parametrize(("method", "path"), [
    ("put", "/v1/items/x"), ("post", "/v1/items/bulk"), ("post", "/v1/events"), ("post", "/v1/admin/train"),
])
@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT])
def test_deep_json_is_a_400_on_every_json_write_endpoint(client, method, path, body):
    response = getattr(client, method)(path, data=body, content_type="application/json")
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.mimetype == "application/problem+json"
    assert "nested too deeply" in response.get_json()["detail"]


def test_deep_attributes_that_parse_are_refused_naming_the_field(client):
    item = {"id": "deep", "title": "x", "attributes": {}}
    node = item["attributes"]
    for _ in range(200):
        node["k"] = {}
        node = node["k"]
    response = client.put("/v1/items/deep", json=item)
    assert response.status_code == 400 and "attributes" in response.get_json()["detail"]


def test_failed_task_shows_a_short_reason_not_the_exception_repr(app, client):
    from elasticsearch import ConnectionError as ESConnectionError

    from indexer.errors import BackendUnavailable

    backend = app.extensions["hybridrec"].celery.backend
    raw, domain = str(uuid.uuid4()), str(uuid.uuid4())
    with warnings.catch_warnings():  # Celery's Redis backend still calls redis-py's deprecated setex
        warnings.simplefilter("ignore", DeprecationWarning)
        backend.mark_as_failure(raw, ESConnectionError(
            "Connection error caused by: NewConnectionError(<HTTPConnection(host='10.1.2.3', port=9200)>: refused)"))
        backend.mark_as_failure(domain, BackendUnavailable("3 items not written; retrying"))
    shown = client.get(f"/v1/tasks/{raw}").get_json()
    assert shown["state"] == "FAILURE"
    assert shown["result"]["error"] == "ConnectionError" and "10.1.2.3" not in str(shown), shown
    assert client.get(f"/v1/tasks/{domain}").get_json()["result"] == {
        "error": "BackendUnavailable", "reason": "3 items not written; retrying"}


@pytest.mark.parametrize("path", ["/v1/users/{id}/recommendations", "/v1/items/{id}/similar", "/v1/tasks/{id}",
                                  "/v1/users/{id}/export"])
def test_ids_in_read_paths_are_bounded(client, path):
    for bad in ("x" * 257, "\U0001f600" * 200):  # over 256 characters; over 512 UTF-8 bytes
        response = client.get(path.format(id=bad))
        assert response.status_code == 400 and response.mimetype == "application/problem+json", path
        assert "id" in response.get_json()["detail"]
