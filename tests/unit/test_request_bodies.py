"""Request bodies at the size limit, sized or streamed (chunked): a 413, never a parse error. No server."""
from __future__ import annotations

import io
import json
import logging

import pytest
from flask import Flask
from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError
from werkzeug.test import EnvironBuilder, run_wsgi_app

from api import create_app
from indexer.settings import load_settings

SETTINGS = load_settings(es_url="http://127.0.0.1:1", redis_url="redis://127.0.0.1:1/0",
                         broker_url="redis://127.0.0.1:1/1", rate_limit="1000000/second")


@pytest.fixture
def app() -> Flask:
    logging.getLogger("flask-limiter").setLevel(logging.CRITICAL)  # no Redis here: the limiter says so
    app = create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 4096}, settings=SETTINGS)
    return app


def streamed(app: Flask, body: bytes) -> tuple[str, dict[str, object]]:
    """POST /v1/events as gunicorn passes a chunked body: no Content-Length, a stream the server ends."""
    environ = EnvironBuilder(path="/v1/events", method="POST", headers={"Content-Type": "application/json",
                                                                       "Transfer-Encoding": "chunked"}).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True})
    chunks, status, _ = run_wsgi_app(app, environ)
    return status, json.loads(b"".join(chunks))


def test_a_streamed_body_over_the_limit_is_a_413(app: Flask) -> None:
    big = b'{"events": [' + b'{"user_id": "u", "item_id": "i", "type": "view"},' * 200 + b"{}]}"
    status, body = streamed(app, big)
    assert status.startswith("413") and body["status"] == 413


def test_a_sized_body_over_the_limit_is_a_413_and_a_small_streamed_one_is_read(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/v1/events", data=b"x" * 5000, headers={"Content-Type": "application/json"}).status_code == 413
    status, body = streamed(app, b'{"events": []}')
    assert status.startswith("400") and "no events" in str(body["detail"])


@pytest.mark.parametrize("error", [ClusterDownError("CLUSTERDOWN The cluster is down"),
                                   TryAgainError("TRYAGAIN"), SlotNotCoveredError("slot 5 not covered")])
def test_a_redis_cluster_failing_over_is_a_503(app: Flask, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """What a cluster answers while a replica takes over is transient, as a lost connection is: 503, not 500."""
    def failing_over(*args: object, **kwargs: object) -> None:
        raise error

    # The read path's first Redis step.
    monkeypatch.setattr("indexer.profile_store.ProfileStore.queue_load", failing_over)
    response = app.test_client().get("/v1/users/u1/recommendations")
    assert response.status_code == 503 and response.get_json()["title"] == "Backend unavailable"


def test_knn_clause_rescores_a_quantised_field_only_when_asked() -> None:
    import numpy as np
    import pytest
    from pydantic import ValidationError

    from indexer.filters import Filters
    from indexer.queries import knn_clause
    from indexer.settings import Settings

    plain = knn_clause(np.array([0.6, 0.8]), Filters(), 10, 400)
    assert "rescore_vector" not in plain and plain["num_candidates"] == 400
    assert knn_clause(np.array([0.6, 0.8]), Filters(), 10, 400, oversample=5.0)["rescore_vector"] == {"oversample": 5.0}
    assert Settings(knn_oversample=0).knn_oversample == 0
    with pytest.raises(ValidationError, match="KNN_OVERSAMPLE"):
        Settings(knn_oversample=0.5)


def test_knn_settings_follow_the_catalog_size_unless_set() -> None:
    from indexer.search import knn_settings
    from indexer.settings import Settings

    unset = Settings()
    # The smallest settings measured to keep recall@10 >= 0.95 at 10k, 100k and 1M items (bench/serving.py).
    assert knn_settings(unset, lambda: 10_000) == (100, None)
    assert knn_settings(unset, lambda: 100_000) == (200, None)
    assert knn_settings(unset, lambda: 1_000_000) == (400, 10.0)
    assert knn_settings(unset, lambda: 0) == (100, None)
    # Each setting the environment gives wins on its own.
    assert knn_settings(Settings(knn_num_candidates=150), lambda: 1_000_000) == (150, 10.0)
    assert knn_settings(Settings(knn_oversample=0), lambda: 1_000_000) == (400, 0)

    def no_count() -> int:
        raise AssertionError("both set: the catalog size is not needed")

    assert knn_settings(Settings(knn_num_candidates=150, knn_oversample=5), no_count) == (150, 5)


def test_catalog_size_is_read_once_a_ttl_and_kept_when_a_read_fails() -> None:
    import time

    from elasticsearch import ConnectionError as ESConnectionError

    from indexer import search

    class Counting:
        def __init__(self) -> None:
            self.calls, self.fail = 0, False

        def options(self, **_: object) -> Counting:
            return self

        def count(self, index: str) -> dict[str, int]:
            self.calls += 1
            if self.fail:
                raise ESConnectionError("down")
            return {"count": 123_456}

    es = Counting()
    size = search.CatalogSize(es, "items", 1.0)
    assert size.get() == 123_456 and size.get() == 123_456 and es.calls == 1
    es.fail = True
    size._read = (0.0, 123_456)  # the TTL passes
    assert size.get() == 123_456 and es.calls == 2  # the failed read keeps the last count
    assert size._read is not None and size._read[0] - time.monotonic() <= search.CATALOG_SIZE_RETRY_S
    fresh = search.CatalogSize(es, "items", 1.0)
    assert fresh.get() == 0 and es.calls == 3  # nothing read yet: the smallest catalog's settings
