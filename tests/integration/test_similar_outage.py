"""Similar items and events while Elasticsearch cannot answer: unreachable (a stopped node), or reachable
with the items' shards unavailable (as while shards recover after a restart). Neither is "not found"."""
from __future__ import annotations

import pytest

from indexer import keys, lifecycle

pytestmark = pytest.mark.integration


def _catalog(es, settings) -> None:
    from indexer.catalog import index_items
    from indexer.documents import Item
    from indexer.encoder import get_encoder

    themes = ["space", "cooking", "garden", "football"]
    items = [Item(id=f"s{i}", title=f"{themes[i % 4]} story {i}", description=f"all about {themes[i % 4]}",
                  category=themes[i % 4], version=1) for i in range(12)]
    index_items(es, settings, items, get_encoder(settings))
    es.indices.refresh(index=lifecycle.alias_name(settings, "items"))


def test_similar_degrades_while_elasticsearch_is_unreachable(fresh, es, settings, redis_client):
    from api import create_app

    _catalog(es, settings)
    redis_client.zadd(keys.key(settings.index_prefix, keys.TRENDING), {"s3": 5.0, "s0": 4.0, "s5": 3.0})
    up = create_app({"TESTING": True}, settings=settings).test_client()
    before = up.get("/v1/items/s0/similar?k=4").get_json()
    assert before["degraded"] is False and len(before["items"]) == 4

    # The same Redis, an Elasticsearch address where nothing answers: a stopped node.
    down = create_app({"TESTING": True}, settings=settings.model_copy(
        update={"es_url": "http://127.0.0.1:9297"})).test_client()
    again = down.get("/v1/items/s0/similar?k=4")
    assert again.status_code == 200, again.get_json()
    body = again.get_json()
    assert body["degraded"] is True and body["items"] == before["items"]  # the last good answer
    never_asked = down.get("/v1/items/s3/similar?k=4")
    assert never_asked.status_code == 200, never_asked.get_json()
    trending = never_asked.get_json()
    assert trending["degraded"] is True and trending["strategy"] == "trending"
    assert [i["id"] for i in trending["items"]] == ["s0", "s5"]  # trending, the item itself left out


def test_unavailable_shards_are_not_missing_items(fresh, es, settings, redis_client):
    from api import create_app

    _catalog(es, settings)
    client = create_app({"TESTING": True}, settings=settings).test_client()
    before = client.get("/v1/items/s1/similar?k=3").get_json()
    assert before["degraded"] is False
    alias = lifecycle.alias_name(settings, "items")
    live = lifecycle.current_index(es, settings)
    # An index whose only shard cannot be allocated: every get answers "no shard available".
    red = f"{alias}-v99"
    es.options(request_timeout=30).indices.create(
        index=red, wait_for_active_shards="0",
        settings={"number_of_shards": 1, "number_of_replicas": 0,
                  "index.routing.allocation.require._name": "no-such-node"})
    es.indices.update_aliases(actions=[{"remove": {"index": live, "alias": alias}},
                                       {"add": {"index": red, "alias": alias, "is_write_index": True}}])
    try:
        similar = client.get("/v1/items/s1/similar?k=3")
        assert similar.status_code == 200, similar.get_json()  # not 404: the item exists, its shard is away
        assert similar.get_json()["degraded"] is True and similar.get_json()["items"] == before["items"]
        event = client.post("/v1/events", json={"user_id": "shard-user", "item_id": "s1", "type": "like"})
        assert event.status_code == 202, event.get_json()
        # Not "unknown" and not applied without its vector: deferred until the shards answer.
        assert event.get_json()["profile_pending"] is True and not event.get_json().get("unknown_items")
        pending = redis_client.llen(keys.key(settings.index_prefix, keys.PENDING_PROFILE))
        assert pending == 1
    finally:
        es.indices.update_aliases(actions=[{"remove": {"index": red, "alias": alias}},
                                           {"add": {"index": live, "alias": alias, "is_write_index": True}}])
