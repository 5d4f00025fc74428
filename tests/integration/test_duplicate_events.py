"""The same event (same event_id) sent twice is stored once and applied once: the live profile and trending
agree with the profile rebuilt from the events index. Real node, Redis and worker."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture()
def catalog(fresh, es, settings):
    from indexer.catalog import index_items
    from indexer.documents import Item
    from indexer.encoder import get_encoder
    from indexer.lifecycle import alias_name

    items = [Item(id="s1", title="Voyage to Mars", description="A rocket to the red planet.", version=1),
             Item(id="c1", title="Pasta cookbook", description="Fresh pasta and tomato sauce.", version=1)]
    index_items(es, settings, items, get_encoder(settings))
    es.indices.refresh(index=alias_name(settings, "items"))


def test_duplicate_event_is_applied_once_and_matches_the_rebuilt_profile(catalog, worker, client, es, settings,
                                                                         redis_client):
    from celery.result import AsyncResult

    from indexer.lifecycle import alias_name
    from indexer.profile import interest_vector
    from indexer.profile_store import ProfileStore
    from workers.celery_app import app as celery_app
    from workers.cli import main

    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 600))
    like = {"event_id": "dup-like", "user_id": "ann", "item_id": "s1", "type": "like", "ts": ts}
    view = {"event_id": "dup-view", "user_id": "ann", "item_id": "c1", "type": "view", "ts": ts}
    first = client.post("/v1/events", json=like).get_json()
    again = client.post("/v1/events", json=like).get_json()             # a client's retry
    batch = client.post("/v1/events", json={"events": [view, view, like]}).get_json()  # twice in one batch
    assert first["profile_versions"] == {"ann": 1}
    assert again["accepted"] == 1 and again["profile_versions"] == {} and again.get("duplicates") == 1
    assert batch["profile_versions"] == {"ann": 2} and batch.get("duplicates") == 2
    for answer in (first, again, batch):
        AsyncResult(answer["task_id"], app=celery_app).get(timeout=120)

    store = ProfileStore(redis_client, settings)
    live, live_trending = store.load("ann"), dict(store.trending(10))
    assert live is not None and live.version == 2 and live.event_count == 2
    es.indices.refresh(index=alias_name(settings, "events"))
    assert es.count(index=alias_name(settings, "events"))["count"] == 2

    assert main(["profiles", "rebuild"]) == 0
    rebuilt = store.load("ann")
    assert rebuilt is not None and (rebuilt.version, rebuilt.event_count) == (live.version, live.event_count)
    assert np.allclose(interest_vector(rebuilt), interest_vector(live), atol=1e-5)
    assert dict(store.trending(10)) == pytest.approx(live_trending)
