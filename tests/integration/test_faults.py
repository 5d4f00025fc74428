"""Elasticsearch stopped while events keep arriving: reads are answered degraded (never a 500), no event is
lost, and deferred profile updates are applied once the node is back. Uses a private node and worker."""
from __future__ import annotations

import os
import shutil
import time
from functools import partial

import pytest
from celery import Celery

from indexer import keys
from tests.helpers import PREFIX, WorkerProcess, drop_test_indices, run_stack

pytestmark = pytest.mark.integration

# Overridable, like the suite's Redis databases, so that two test runs on one machine keep apart.
PORT = os.environ.get("HYBRIDREC_TEST_FAULTS_ES_PORT", "9293")
TRANSPORT_PORT = os.environ.get("HYBRIDREC_TEST_FAULTS_TRANSPORT_PORT", "9393")
BROKER_URL = os.environ.get("HYBRIDREC_TEST_FAULTS_BROKER_URL", "redis://127.0.0.1:6379/15")
OUTAGE_S = int(os.environ.get("HYBRIDREC_OUTAGE_S", "15"))  # the issue asks ~30 s; CI keeps it short


@pytest.fixture()
def private(tmp_path, redis_client):
    from indexer.settings import load_settings

    env = {"HYBRIDREC_STATE_DIR": str(tmp_path / "stack"), "HYBRIDREC_ES_PORT": PORT,
           "HYBRIDREC_ES_TRANSPORT_PORT": TRANSPORT_PORT, "HYBRIDREC_ES_HEAP": "512m"}

    stack = partial(run_stack, env)

    hybridrec_env = {"HYBRIDREC_ES_URL": f"http://127.0.0.1:{PORT}", "HYBRIDREC_INDEX_PREFIX": f"{PREFIX}-f",
                     "HYBRIDREC_BROKER_URL": BROKER_URL}
    settings = load_settings(es_url=hybridrec_env["HYBRIDREC_ES_URL"],
                             index_prefix=hybridrec_env["HYBRIDREC_INDEX_PREFIX"],
                             broker_url=hybridrec_env["HYBRIDREC_BROKER_URL"])
    from redis import Redis

    Redis.from_url(settings.broker_url).flushdb()
    worker = WorkerProcess(tmp_path / "worker.log", env=hybridrec_env, name="faults")
    try:
        stack("start", "es")
        worker.start()
        yield settings, stack
    finally:
        worker.stop()
        stack("stop", "es")


def test_es_outage_degrades_reads_and_loses_no_event(private, redis_client):
    from api import create_app
    from indexer import lifecycle
    from indexer.catalog import index_items
    from indexer.clients import make_es
    from indexer.documents import Item
    from indexer.encoder import get_encoder

    settings, stack = private
    es = make_es(settings, timeout=30)
    lifecycle.ensure_indices(es, settings)
    items = [Item(id=f"m{i}", title=f"{theme} item {i}", description=f"all about {theme}", category=theme, version=1)
             for i, theme in enumerate(["space", "cooking", "garden", "football"] * 5)]
    index_items(es, settings, items, get_encoder(settings))
    es.indices.refresh(index=lifecycle.alias_name(settings, "items"))
    client = create_app({"TESTING": True}, settings=settings).test_client()
    results = Celery(broker=settings.broker_url, backend=settings.broker_url)

    like = {"user_id": "ann", "item_id": "m0", "type": "like"}
    task_ids = [client.post("/v1/events", json=like).get_json()["task_id"]]
    before = client.get("/v1/users/ann/recommendations?k=5").get_json()
    assert before["degraded"] is False and before["items"]

    stack("stop", "es")
    outage_started = time.time()
    sent = 1
    statuses = []
    while time.time() - outage_started < OUTAGE_S:
        user = f"user{sent % 4}"
        accepted = client.post("/v1/events", json={"user_id": user, "item_id": f"m{sent % 20}", "type": "click"})
        assert accepted.status_code == 202 and accepted.get_json()["profile_pending"] is True, accepted.get_json()
        task_ids.append(accepted.get_json()["task_id"])
        sent += 1
        for url in ("/v1/users/ann/recommendations?k=5", "/v1/users/zed/recommendations?k=5",
                    "/v1/users/zed/recommendations?k=5&category=space"):
            response = client.get(url)
            statuses.append(response.status_code)
            assert response.status_code == 200, response.get_json()
            body = response.get_json()
            # Either a still-valid cached answer (no Elasticsearch needed) or a degraded one.
            assert body["degraded"] is True or (body["cached"] is True and url.startswith("/v1/users/ann")), body
        time.sleep(0.5)
    assert client.get("/ready").status_code == 503
    stale = client.get("/v1/users/ann/recommendations?k=5&exclude=m99").get_json()  # not in the cache
    # No last good answer for these parameters: trending from Redis, still without what ann has seen.
    assert stale["degraded"] is True and stale["strategy"] == "trending"
    assert "m0" not in {i["id"] for i in stale["items"]}
    assert client.get("/v1/users/ann/recommendations?k=5").get_json()["items"] == before["items"]
    assert client.get("/v1/users/zed/recommendations?k=5&category=space").get_json()["items"] == []

    stack("start", "es")
    restarted = time.time()
    outcomes = [results.AsyncResult(task_id).get(timeout=300) for task_id in task_ids]
    for follow_up in {task_id for outcome in outcomes for task_id in outcome["follow_up"]}:
        results.AsyncResult(follow_up).get(timeout=120)  # deferred profiles are drained by a follow-up task
    recovery_s = time.time() - restarted
    es.indices.refresh(index=lifecycle.alias_name(settings, "events"))
    stored = es.count(index=lifecycle.alias_name(settings, "events"))["count"]
    counts = [(i["index"], i["docs.count"]) for i in es.cat.indices(format="json")]
    assert stored == sent, (stored, sent, counts, outcomes)  # 0 lost
    from indexer.profile_store import ProfileStore

    store = ProfileStore(redis_client, settings)
    assert redis_client.llen(keys.key(settings.index_prefix, keys.PENDING_PROFILE)) == 0
    versions = sum(store.version(f"user{u}") for u in range(4))
    assert versions == sent - 1  # every deferred profile update was applied
    after = client.get("/v1/users/user1/recommendations?k=5").get_json()
    assert after["degraded"] is False and after["cold_start"] is False
    print(f"\nES outage {OUTAGE_S}s: {sent} events sent, 0 lost; {len(statuses)} reads, all 200 degraded; "
          f"recovery (restart -> all events written) {recovery_s:.1f}s")


def test_bulk_rejections_retry_only_the_rejected_documents(tmp_path):
    """A node with a one-slot write queue answers 429 under concurrent bulks; every document still lands
    exactly once (each was executed once: rejected ones were retried, accepted ones were not)."""
    import threading

    from elasticsearch import Elasticsearch

    from indexer.bulk import index_documents

    env = {"HYBRIDREC_STATE_DIR": str(tmp_path / "stack"), "HYBRIDREC_ES_PORT": "9294",
           "HYBRIDREC_ES_TRANSPORT_PORT": "9394", "HYBRIDREC_ES_HEAP": "512m",
           "HYBRIDREC_ES_EXTRA_ARGS": "-Ethread_pool.write.size=1 -Ethread_pool.write.queue_size=1"}

    stack = partial(run_stack, env)

    try:
        stack("start", "es")
        es = Elasticsearch("http://127.0.0.1:9294", request_timeout=60)
        es.indices.create(index="rejections", settings={"number_of_shards": 1, "number_of_replicas": 0},
                          mappings={"properties": {"id": {"type": "keyword"}, "n": {"type": "integer"}}})
        reports = []

        def writer(start: int) -> None:
            docs = [{"id": f"d{i}", "n": i, "_version": 1} for i in range(start, start + 1500)]
            reports.append(index_documents(es, ["rejections"], docs))

        threads = [threading.Thread(target=writer, args=(n * 1500,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        es.indices.refresh(index="rejections")
        nodes = es.nodes.stats(metric="thread_pool")["nodes"].values()
        rejected = sum(n["thread_pool"]["write"]["rejected"] for n in nodes)
        stats = es.indices.stats(index="rejections", metric="indexing")
        executed = stats["_all"]["primaries"]["indexing"]["index_total"]
        assert all(not r.failed for r in reports) and sum(r.ok for r in reports) == 9000
        assert es.count(index="rejections")["count"] == 9000
        assert rejected > 0, "the node never pushed back: the test proves nothing"
        assert executed == 9000  # no document was indexed twice by a blanket retry
        print(f"\nbulk under 429s: {rejected} rejections, 9000 documents indexed once each")
    finally:
        stack("stop", "es")


def test_redis_restart_profiles_rebuilt_from_events(tmp_path, es):
    """A private Redis is lost with its append-only file: profiles come back from the events index and give
    the same recommendations as before."""
    from api import create_app
    from indexer import lifecycle
    from indexer.catalog import index_items
    from indexer.documents import Item
    from indexer.encoder import get_encoder
    from indexer.profile_maintenance import rebuild_profiles
    from indexer.settings import load_settings

    env = {"HYBRIDREC_STATE_DIR": str(tmp_path / "stack"), "HYBRIDREC_REDIS_PORT": "6392"}

    stack = partial(run_stack, env)

    urls = {"HYBRIDREC_REDIS_URL": "redis://127.0.0.1:6392/0", "HYBRIDREC_BROKER_URL": "redis://127.0.0.1:6392/1",
            "HYBRIDREC_INDEX_PREFIX": f"{PREFIX}-r"}
    settings = load_settings(redis_url=urls["HYBRIDREC_REDIS_URL"], broker_url=urls["HYBRIDREC_BROKER_URL"],
                             index_prefix=urls["HYBRIDREC_INDEX_PREFIX"], reco_cache_ttl=0)
    worker = WorkerProcess(tmp_path / "worker.log", env=urls, name="redis")
    try:
        stack("start", "redis")
        worker.start()
        lifecycle.ensure_indices(es, settings)
        themes = ["space", "cooking", "garden", "football"]
        items = [Item(id=f"r{i}", title=f"{themes[i % 4]} story {i}", description=f"all about {themes[i % 4]}",
                      category=themes[i % 4], version=1) for i in range(24)]
        index_items(es, settings, items, get_encoder(settings))
        es.indices.refresh(index=lifecycle.alias_name(settings, "items"))
        client = create_app({"TESTING": True}, settings=settings).test_client()
        results = Celery(broker=settings.broker_url, backend=settings.broker_url)
        users = [f"ru{n}" for n in range(6)]
        tasks = []
        for n, user in enumerate(users):
            for item in (f"r{n}", f"r{n + 4}", f"r{n + 9}"):
                tasks.append(client.post("/v1/events", json={"user_id": user, "item_id": item, "type": "like"})
                             .get_json()["task_id"])
        for task_id in tasks:
            results.AsyncResult(task_id).get(timeout=120)
        before = {u: [i["id"] for i in client.get(f"/v1/users/{u}/recommendations?k=5").get_json()["items"]]
                  for u in users}

        stack("stop", "redis")
        shutil.rmtree(tmp_path / "stack" / "redis")  # Redis lost with its disk: every profile is gone
        stack("start", "redis")
        assert client.get(f"/v1/users/{users[0]}/recommendations?k=5").get_json()["cold_start"] is True
        started = time.time()
        summary = rebuild_profiles(es, settings)
        rebuild_s = time.time() - started
        assert summary == {"users": len(users), "events": len(tasks)}
        after = {u: [i["id"] for i in client.get(f"/v1/users/{u}/recommendations?k=5").get_json()["items"]]
                 for u in users}
        assert after == before
        print(f"\nredis restart: {len(users)} profiles rebuilt from {len(tasks)} events in {rebuild_s:.2f}s, "
              f"recommendations identical")
    finally:
        worker.stop()
        stack("stop", "redis")
        drop_test_indices(es, f"{PREFIX}-r-*")
