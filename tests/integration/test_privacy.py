"""A user's data is exported whole and erased from every store: after the erasure no index under the test
prefix and no Redis key (names and values, the app's and the broker's databases) holds the user's id, and
neither events queued at erasure time nor a profile rebuild nor the training's read brings the user back."""
from __future__ import annotations

import json
import secrets
import time

import pytest

from tests.helpers import PREFIX, catalog_items

pytestmark = pytest.mark.integration

ITEMS = catalog_items("s1", "s2", "s3", "c1", "c2")
USER = f"erasable-{secrets.token_hex(4)}"  # distinctive: found by a plain substring search anywhere
OTHER = "keeper"


@pytest.fixture()
def catalog(fresh, es, settings):
    from tests.helpers import index_catalog

    index_catalog(es, settings, ITEMS)


def post_events(client, events):
    from celery.result import AsyncResult

    from workers.celery_app import app as celery_app

    response = client.post("/v1/events", json={"events": events})
    assert response.status_code == 202, response.get_json()
    result = AsyncResult(response.get_json()["task_id"], app=celery_app).get(timeout=120)
    # Click attribution (which writes the queued logs first) runs after the events: wait for it, or it
    # would race the log lines the test queues next.
    for follow_up in result["follow_up"]:
        AsyncResult(follow_up, app=celery_app).get(timeout=120)
    return result


def indices_holding(es, needle):
    """Every document of every index under the test prefix that names `needle`: by user_id, by a query
    over all fields, and by a substring scan of every source."""
    from elasticsearch.helpers import scan

    names = list(es.indices.get(index=f"{PREFIX}-*", ignore_unavailable=True, allow_no_indices=True).body)
    es.indices.refresh(index=names)
    found = []
    for name in names:
        query = {"bool": {"should": [{"term": {"user_id": needle}}, {"ids": {"values": [needle]}},
                                     {"query_string": {"query": f'"{needle}"', "lenient": True}}]}}
        found += [(name, h["_id"]) for h in es.search(index=name, query=query, size=10)["hits"]["hits"]]
        found += [(name, h["_id"]) for h in scan(es, index=name, query={"query": {"match_all": {}}}, size=500,
                                                  request_timeout=30) if needle in json.dumps(h)]
    return found


def redis_holding(client, needle):
    """Every key of one Redis database whose name or value contains `needle`."""
    found = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key)]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [part for pair in client.hgetall(key).items() for part in pair]
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        if needle.encode() in key or any(needle.encode() in (v or b"") for v in values):
            found.append(key.decode())
    return found


def no_foreign_worker(settings):
    """Tasks sent here must run in this run's worker: another one on the same broker database (another
    checkout's fault test, say) would run them against its own indices, and the counts would not add up."""
    from celery import Celery

    replies = Celery(broker=settings.broker_url).control.ping(timeout=1.0) or []
    foreign = sorted(name for reply in replies for name in reply if not name.startswith(f"{PREFIX}-main@"))
    if foreign:
        pytest.fail(f"other Celery workers consume {settings.broker_url}: {foreign}; run again without them")


def test_export_then_erase_leaves_nothing_behind(catalog, worker, client, es, settings, redis_client, capsys):
    no_foreign_worker(settings)
    from celery.result import AsyncResult
    from redis import Redis

    from indexer import keys
    from indexer.events import event_document, validate_events
    from indexer.lifecycle import alias_name
    from indexer.profile_store import AppliedEvent, ProfileStore
    from indexer.training_data import read_histories
    from workers.celery_app import app as celery_app
    from workers.cli import main
    from workers.tasks import record_events

    now = time.time()
    stamp = lambda offset: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - offset))  # noqa: E731
    mine = [{"user_id": USER, "item_id": "s1", "type": "like", "ts": stamp(600), "session_id": f"{USER}-s"},
            {"user_id": USER, "item_id": "s2", "type": "view", "ts": stamp(500)}]
    theirs = [{"user_id": OTHER, "item_id": "c1", "type": "like", "ts": stamp(400)}]
    assert post_events(client, mine + theirs)["written"] == 3

    served = client.get(f"/v1/users/{USER}/recommendations?k=3").get_json()
    assert served["items"] and not served["cold_start"]
    assert client.get(f"/v1/search?q=planet&user_id={USER}").status_code == 200
    # A click on the served list: the worker writes the queued logs first, then attributes the click.
    assert post_events(client, [{"user_id": USER, "item_id": served["items"][0]["id"], "type": "click",
                                 "request_id": served["request_id"]}])["written"] == 1
    client.get(f"/v1/users/{USER}/recommendations?k=3&exclude_seen=false")  # a log line left in the queue
    assert main(["profiles", "snapshot"]) == 0

    # What waits in queues at erasure time: a deferred profile update, a dead-lettered batch shared with
    # another user, and a durable write still in the broker (due in a few seconds).
    store = ProfileStore(redis_client, settings)
    store.defer([(USER, AppliedEvent("s3", 1.0, now - 60, None))])
    dead = [event_document(e) for e in validate_events(
        [{"user_id": USER, "item_id": "c2", "type": "view"}, {"user_id": OTHER, "item_id": "c2", "type": "view"}])[0]]
    dead_key = keys.key(settings.index_prefix, keys.EVENTS_DEAD_LETTER)
    redis_client.rpush(dead_key, json.dumps({"reason": "test", "events": dead}))
    late = [event_document(e) for e in validate_events([{"user_id": USER, "item_id": "c1", "type": "view"},
                                                        {"user_id": OTHER, "item_id": "s3", "type": "view"}])[0]]
    queued = record_events.apply_async(args=[late], countdown=8)

    exported = client.get(f"/v1/users/{USER}/export")
    assert exported.status_code == 200
    held = exported.get_json()
    assert held["found"] and held["profile"]["event_count"] == 3 and len(held["profile"]["long_term"]) == 384
    assert {e["item_id"] for e in held["events"]} == {"s1", "s2", served["items"][0]["id"]}
    assert held["history"] and {s["item_id"] for s in held["seen"]} >= {"s1", "s2"}
    assert served["request_id"] in {log["request_id"] for log in held["reco_logs"]}
    assert [s["user_id"] for s in held["snapshots"]] == [USER]
    assert len(held["queued"]["pending_profile_updates"]) == 1 and held["queued"]["reco_logs"]
    assert [e["item_id"] for e in held["queued"]["dead_letter_events"]] == ["c2"]

    erased = client.delete(f"/v1/users/{USER}")
    assert erased.status_code == 200
    counts = erased.get_json()["deleted"]
    assert counts["events"] == 3 and counts["snapshots"] == 1 and counts["reco_logs"] >= 1
    assert counts["profile"] == counts["seen"] == counts["history"] == 1 and counts["caches"] >= 2
    assert counts["pending_profile_updates"] == 1 and counts["queued_reco_logs"] >= 1
    assert counts["dead_letter_events"] == 1
    again = client.delete(f"/v1/users/{USER}")
    assert again.status_code == 200 and again.get_json()["total"] == 0, again.get_json()
    assert client.get(f"/v1/users/{USER}/export").get_json()["found"] is False
    capsys.readouterr()
    assert main(["users", "delete", USER]) == 0 and json.loads(capsys.readouterr().out)["total"] == 0

    # The write that was still in the broker lands without the erased user's event.
    assert AsyncResult(queued.id, app=celery_app).get(timeout=120)["written"] == 1
    # The other user's dead-lettered event is still there and replays; the erased one's does not.
    assert [e["user_id"] for e in json.loads(redis_client.lindex(dead_key, 0))["events"]] == [OTHER]
    assert main(["events", "replay"]) == 0
    deadline = time.time() + 60
    events_alias = alias_name(settings, "events")
    while time.time() < deadline:
        es.indices.refresh(index=events_alias)
        if es.count(index=events_alias, query={"term": {"user_id": OTHER}})["count"] == 3:
            break
        time.sleep(0.3)
    assert es.count(index=events_alias, query={"term": {"user_id": OTHER}})["count"] == 3
    broker = Redis.from_url(settings.broker_url)
    deadline = time.time() + 30
    while broker.llen("events") and time.time() < deadline:
        time.sleep(0.2)

    assert indices_holding(es, USER) == []
    assert redis_holding(redis_client, USER) == [] and redis_holding(broker, USER) == []

    assert main(["profiles", "rebuild"]) == 0
    assert store.load(USER) is None and store.load(OTHER) is not None
    histories = read_histories(es, settings)
    assert OTHER in histories.user_ids and USER not in histories.user_ids
    assert indices_holding(es, USER) == [] and redis_holding(redis_client, USER) == []

    # A profile update of an event accepted before the erasure (the API applies it just after enqueueing
    # the durable write) is not applied; one of the same id well after it is new data.
    store.apply(USER, None, AppliedEvent("s1", 1.0, time.time(), None))
    assert store.load(USER) is None
    assert store.apply(USER, None, AppliedEvent("s1", 1.0, time.time() + 3600, None)).version == 1


def test_scopes_and_bad_ids(fresh, settings):
    from api import create_app
    from indexer.settings import load_settings

    reader, writer, admin = "reader-secret-0123456789", "writer-secret-0123456789", "admin-secret-01234567890"
    keyed = load_settings(**{**settings.model_dump(),
                             "api_keys": f"r:{reader}:read;w:{writer}:write;a:{admin}:admin"})
    client = create_app({"TESTING": True}, settings=keyed).test_client()
    assert client.delete("/v1/users/nobody").status_code == 401
    for method, path in ((client.delete, "/v1/users/nobody"), (client.get, "/v1/users/nobody/export")):
        denied = method(path, headers={"X-API-Key": reader})
        assert denied.status_code == 403 and "'write'" in denied.get_json()["detail"]
        for key in (writer, admin):
            assert method(path, headers={"X-API-Key": key}).status_code == 200
    nothing = client.delete("/v1/users/nobody", headers={"X-API-Key": writer}).get_json()
    assert nothing["total"] == 0 and set(nothing["deleted"]) >= {"events", "reco_logs", "snapshots", "profile"}
    for bad in ("x" * 257, "\U0001f600" * 200):  # over 256 characters; over 512 UTF-8 bytes
        response = client.delete(f"/v1/users/{bad}", headers={"X-API-Key": admin})
        assert response.status_code == 400 and response.mimetype == "application/problem+json"
    # Events may carry any user id within those limits, spaces included: such a user can be erased too.
    assert client.delete("/v1/users/a%20b", headers={"X-API-Key": admin}).status_code == 200
