"""One bad record never sinks its batch: values Elasticsearch refuses (for the whole bulk request or for the
document) are refused at the API with a 400 naming the field, and where one still reaches a worker it is
isolated, reported in the task result, and its neighbours are written. Real node, Redis and worker."""
from __future__ import annotations

import pytest

from indexer import lifecycle

pytestmark = pytest.mark.integration

EMOJI_ID = "\U0001f600" * 200  # 200 characters, 800 bytes in UTF-8
TOO_BIG = 2**63


def nested(depth: int, leaf: object = "v") -> object:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


def good_items(n: int, prefix: str = "p") -> list[dict]:
    return [{"id": f"{prefix}{i}", "title": f"good item {i}", "description": "a plain catalog item", "version": 1}
            for i in range(n)]


def count(es, settings, ids: list[str] | None = None) -> int:
    """Documents in the items alias (of these ids: tasks queued by the API tests may land here too)."""
    alias = lifecycle.alias_name(settings, "items")
    es.indices.refresh(index=alias)
    query = {"ids": {"values": ids}} if ids is not None else {"match_all": {}}
    return int(es.count(index=alias, query=query)["count"])


@pytest.mark.parametrize(("poison", "field"), [
    ({"version": TOO_BIG}, "version"),
    ({"updated_at": "1960-05-01T00:00:00Z"}, "updated_at"),
    ({"id": EMOJI_ID}, "id"),
    ({"attributes": nested(21)}, "attributes"),  # 21 objects, counting the attributes object itself
    ({"attributes": {"k": "x" * 32_765}}, "attributes"),  # "k" + 1 + 32,765 bytes: one over the limit
])
def test_api_refuses_what_elasticsearch_would_refuse(fresh, client, poison, field):
    bad = {"id": "p-bad", "title": "x", **poison}
    response = client.post("/v1/items/bulk", json=[bad, {"id": "p-good", "title": "y"}])
    body = response.get_json()
    assert response.status_code == 202 and body["accepted"] == 1, body
    assert [e["index"] for e in body["errors"]] == [0] and body["errors"][0]["errors"][0].startswith(field), body
    alone = client.post("/v1/items/bulk", json=[bad])
    assert alone.status_code == 400 and field in alone.get_json()["detail"], alone.get_json()


def test_api_accepts_the_limits_themselves(fresh, client):
    items = [{"id": "\u00e9" * 256, "title": "a"}, {"id": "v", "title": "b", "version": TOO_BIG - 1},
             {"id": "d", "title": "c", "attributes": nested(20)},
             {"id": "s", "title": "d", "attributes": {"k": "x" * 32_764}},
             {"id": "old", "title": "e", "updated_at": "1960-05-01T00:00:00Z", "version": 3}]
    body = client.post("/v1/items/bulk", json=items).get_json()
    assert body["accepted"] == len(items) and not body["errors"], body


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "session_id", "request_id"])
def test_api_counts_event_ids_in_bytes(fresh, client, field):
    event = {"user_id": "u", "item_id": "i", "type": "view", field: EMOJI_ID}
    response = client.post("/v1/events", json=event)
    assert response.status_code == 400 and field in response.get_json()["detail"], response.get_json()


def test_bulk_request_refused_as_a_whole_is_split_to_isolate_the_bad_documents(fresh, es, settings):
    from indexer.bulk import index_documents

    docs = [{"id": f"b{i}", "title": "fine", "_version": 1} for i in range(200)]
    docs[17]["_version"] = TOO_BIG          # unparseable: the whole request is a 400
    docs[90]["_version"] = -1               # action_request_validation_exception for the whole request
    docs[150]["id"] = EMOJI_ID              # id over 512 bytes: the same
    report = index_documents(es, [lifecycle.alias_name(settings, "items")], docs)
    assert report.ok == 197 and count(es, settings, [d["id"] for d in docs]) == 197
    refused = {f["id"]: f for f in report.failed}
    assert set(refused) == {"b17", "b90", EMOJI_ID}
    assert all(f["status"] == 400 and f["error"] for f in refused.values())
    assert "out of range" in refused["b17"]["error"] and "version" in refused["b90"]["error"]
    assert "too long" in refused[EMOJI_ID]["error"]


def test_200_item_batch_with_one_poisoned_item_indexes_199(fresh, worker, client, es, settings):
    """The issue's reproduction, sent straight to the worker (as an older API or `ingest` would): the one
    bad item is refused with its reason in GET /v1/tasks/{id}, the other 199 are indexed."""
    from workers.tasks import index_items

    items = good_items(199)
    items.insert(42, {"id": "p-bad", "title": "x", "version": TOO_BIG})
    task = index_items.delay(items)
    task.get(timeout=300)
    shown = client.get(f"/v1/tasks/{task.id}").get_json()
    assert shown["state"] == "SUCCESS", shown
    result = shown["result"]
    assert result["indexed"] == 199 and count(es, settings, [i["id"] for i in items]) == 199
    refused = result["invalid"] + result["failed"]
    assert [r["id"] for r in refused] == ["p-bad"] and "version" in str(refused[0]), result


def test_every_kind_of_poison_reaching_a_worker_is_refused_alone(fresh, worker, es, settings):
    from workers.tasks import index_items

    poisons = [{"id": "q-version", "title": "x", "version": TOO_BIG},
               {"id": "q-1960", "title": "x", "updated_at": "1960-01-01T00:00:00Z"},
               {"id": "q-1950", "title": "x", "created_at": "1950-01-01T00:00:00Z"},
               {"id": EMOJI_ID, "title": "x", "version": 1},
               {"id": "q-deep", "title": "x", "version": 1, "attributes": nested(25)},
               {"id": "q-long", "title": "x", "version": 1, "attributes": {"k": "x" * 40_000}}]
    items = good_items(10)
    for position, poison in enumerate(poisons):
        items.insert(position * 2, poison)
    result = index_items.delay(items).get(timeout=300)
    assert result["indexed"] == 10 and count(es, settings, [i["id"] for i in items]) == 10
    refused = {r["id"]: r for r in result["invalid"] + result["failed"]}
    assert set(refused) == {p["id"] for p in poisons}, result


def test_a_user_id_over_the_limit_in_redis_does_not_stop_the_snapshot(fresh, es, settings, redis_client):
    # Such an id can only be there from before the API counted bytes; every other profile is still copied.
    from indexer.profile_maintenance import snapshot_profiles
    from indexer.profile_store import AppliedEvent, ProfileStore, profile_from_events

    store = ProfileStore(redis_client, settings)
    for user in ("snap-a", EMOJI_ID, "snap-b"):
        applied = [AppliedEvent("i1", 1.0, 1_700_000_000.0, None)]
        store.replace(user, profile_from_events(applied, {}, store.half_life_s), applied)
    report = snapshot_profiles(es, settings)
    assert report["written"] == 2 and report["failed"] == 1, report
    users = lifecycle.alias_name(settings, "users")
    es.indices.refresh(index=users)
    assert {h["_id"] for h in es.search(index=users, size=10)["hits"]["hits"]} == {"snap-a", "snap-b"}
