"""Profiles survive the loss of Redis: rebuilt from the events index (written by the real worker), they give
the same vectors and the same recommendations; snapshots land in the users index."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.helpers import SMALL_CATALOG

pytestmark = pytest.mark.integration

ITEMS = SMALL_CATALOG
EVENTS = [
    ("ann", "s1", "like"), ("ann", "s2", "view"), ("ann", "c1", "dislike"), ("ann", "s3", "click"),
    ("bob", "c2", "purchase"), ("bob", "c1", "view"), ("bob", "f1", "view"),
    ("cid", "f2", "like"), ("cid", "s1", "view"),
]


@pytest.fixture()
def catalog(fresh, es, settings):
    from tests.helpers import index_catalog

    index_catalog(es, settings, ITEMS)


def recommendations(client, user):
    body = client.get(f"/v1/users/{user}/recommendations?k=5").get_json()
    return [i["id"] for i in body["items"]], body


def test_profiles_rebuilt_from_events_after_redis_loss(catalog, worker, client, es, settings, redis_client):
    from celery.result import AsyncResult

    from indexer.lifecycle import alias_name
    from indexer.profile import interest_vector
    from indexer.profile_store import ProfileStore
    from workers.celery_app import app as celery_app
    from workers.cli import main

    now = time.time()
    tasks = []
    for n, (user, item, kind) in enumerate(EVENTS):
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600 + n * 60))
        response = client.post("/v1/events", json={"user_id": user, "item_id": item, "type": kind, "ts": ts,
                                                   "session_id": f"{user}-s"})
        assert response.status_code == 202
        tasks.append(response.get_json()["task_id"])
    for task_id in tasks:
        assert AsyncResult(task_id, app=celery_app).get(timeout=120)["written"] == 1
    es.indices.refresh(index=alias_name(settings, "events"))
    assert es.count(index=alias_name(settings, "events"))["count"] == len(EVENTS)

    store = ProfileStore(redis_client, settings)
    before = {u: store.load(u) for u in ("ann", "bob", "cid")}
    recs_before = {u: recommendations(client, u)[0] for u in before}
    assert "c1" not in recs_before["ann"] and "s1" not in recs_before["ann"]

    redis_client.flushdb()  # Redis restarted with nothing on disk
    assert recommendations(client, "ann")[1]["cold_start"] is True

    assert main(["profiles", "rebuild"]) == 0
    for user, profile in before.items():
        rebuilt = store.load(user)
        assert rebuilt is not None and rebuilt.version == profile.version
        assert np.allclose(interest_vector(rebuilt), interest_vector(profile), atol=1e-5)
        assert recommendations(client, user)[0] == recs_before[user]

    assert main(["profiles", "snapshot"]) == 0
    es.indices.refresh(index=alias_name(settings, "users"))
    ann = es.get(index=alias_name(settings, "users"), id="ann")["_source"]
    assert ann["version"] == 4 and ann["event_count"] == 4 and "s1" in ann["recent_items"]
    assert "c1" not in ann["recent_items"]
