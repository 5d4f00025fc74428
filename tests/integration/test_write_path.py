"""Write path against the real node, Redis and a real Celery worker: ingest, re-embedding, reindex,
worker crash, delete, ordering, bad input."""
from __future__ import annotations

import json
import threading
import time

import pytest

from indexer import lifecycle
from indexer.encoder import get_encoder

pytestmark = pytest.mark.integration

THEMES = {
    "space": ("Rocket voyage to Mars", "Astronauts pilot a spacecraft through the solar system to a red planet."),
    "cooking": ("Italian pasta kitchen", "A chef cooks fresh tagliatelle with tomato sauce and basil."),
    "garden": ("Rose garden care", "Pruning roses, watering soil and growing flowers in spring."),
    "football": ("Cup final match", "Two football teams score goals in a stadium full of supporters."),
}


def make_items(n: int, version: int = 1, prefix: str = "it") -> list[dict]:
    names = list(THEMES)
    items = []
    for i in range(n):
        theme = names[i % len(names)]
        title, text = THEMES[theme]
        items.append({"id": f"{prefix}{i}", "title": f"{title} {i}", "description": text, "category": theme,
                      "tags": [theme], "price": float(i % 50), "version": version})
    return items


def alias(settings) -> str:
    return lifecycle.alias_name(settings, "items")


def knn_ids(es, settings, text: str, k: int = 5) -> list[str]:
    vector = get_encoder(settings).encode([text])[0].tolist()
    hits = es.search(index=alias(settings), knn={"field": "embedding", "query_vector": vector, "k": k,
                                                  "num_candidates": 50}, source=False)["hits"]["hits"]
    return [h["_id"] for h in hits]


def bm25_ids(es, settings, text: str) -> list[str]:
    hits = es.search(index=alias(settings), query={"match": {"title": text}}, source=False)["hits"]["hits"]
    return [h["_id"] for h in hits]


def test_ingested_items_are_findable_by_bm25_and_knn(fresh, worker, es, settings, tmp_path):
    from workers.cli import _read_items, ingest

    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(i) for i in make_items(8)) + "\n")
    totals = ingest(_read_items(path), sync=False)
    assert totals["accepted"] == 8 and totals["indexed"] == 8 and not totals["failed"]
    assert bm25_ids(es, settings, "pasta")[0] in {"it1", "it5"}
    assert set(knn_ids(es, settings, "spaceship flying to another planet", k=2)) == {"it0", "it4"}


def test_changed_text_is_embedded_again_and_unchanged_text_is_not(fresh, worker, es, settings):
    from workers.tasks import index_items

    items = make_items(6)
    first = index_items.delay(items).get(timeout=120)
    assert first["embedded"] == 6 and first["reused"] == 0
    # Same text, other fields changed (price), newer version: no encoder call.
    repriced = [{**i, "price": 99.0, "version": 2} for i in items]
    second = index_items.delay(repriced).get(timeout=120)
    assert second["embedded"] == 0 and second["reused"] == 6 and second["indexed"] == 6
    # One item's description changes: exactly one encoder call.
    changed = [{**i, "version": 3} for i in repriced]
    changed[2]["description"] = "A documentary about deep sea whales and coral reefs."
    third = index_items.delay(changed).get(timeout=120)
    assert third["embedded"] == 1 and third["reused"] == 5
    es.indices.refresh(index=alias(settings))
    assert knn_ids(es, settings, "ocean whales and coral", k=1) == ["it2"]
    assert es.get(index=alias(settings), id="it0")["_source"]["price"] == 99.0


def test_older_update_never_overwrites_newer(fresh, worker, es, settings):
    from workers.tasks import index_items

    newer = {**make_items(1)[0], "title": "Newest title", "version": 5}
    older = {**make_items(1)[0], "title": "Stale title", "version": 4}
    assert index_items.delay([newer]).get(timeout=120)["indexed"] == 1
    result = index_items.delay([older]).get(timeout=120)
    assert result["stale"] == 1 and result["indexed"] == 0
    assert es.get(index=alias(settings), id="it0")["_source"]["title"] == "Newest title"


def test_bad_items_are_reported_and_good_items_of_the_batch_indexed(fresh, worker, client, es, settings):
    good = make_items(2)
    bad = [{"title": "no id"}, {"id": "x1"}, {"id": "x2", "title": "t", "price": "cheap"},
           {"id": "x3", "title": "t", "colour": "red"}, {"id": "x4", "title": "t" * 10, "description": "d" * 30000}]
    response = client.post("/v1/items/bulk", json={"items": good + bad})
    assert response.status_code == 202
    body = response.get_json()
    assert body["accepted"] == 2
    problems = {e["index"]: " ".join(e["errors"]) for e in body["errors"]}
    assert "id" in problems[2] and "title" in problems[3] and "price" in problems[4]
    assert "colour" in problems[5] and "limit" in problems[6]
    from celery.result import AsyncResult

    from workers.celery_app import app as celery_app

    for task_id in body["task_ids"]:
        AsyncResult(task_id, app=celery_app).get(timeout=120)
    es.indices.refresh(index=alias(settings))
    assert es.count(index=alias(settings))["count"] == 2
    none_valid = client.post("/v1/items/bulk", json={"items": bad})
    assert none_valid.status_code == 400


def test_delete_removes_item_from_bm25_and_knn(fresh, worker, es, settings, client):
    from workers.tasks import index_items

    index_items.delay(make_items(8)).get(timeout=120)
    es.indices.refresh(index=alias(settings))
    assert "it0" in bm25_ids(es, settings, "rocket") and "it0" in knn_ids(es, settings, "rocket to mars", k=2)
    response = client.delete("/v1/items/it0")
    assert response.status_code == 202
    from celery.result import AsyncResult

    from workers.celery_app import app as celery_app

    AsyncResult(response.get_json()["task_ids"][0], app=celery_app).get(timeout=60)
    es.indices.refresh(index=alias(settings))
    assert "it0" not in bm25_ids(es, settings, "rocket")
    assert "it0" not in knn_ids(es, settings, "rocket to mars", k=5)


def test_reindex_under_reads_has_no_failed_read_and_keeps_counts(fresh, worker, es, settings):
    from workers.tasks import index_items, reindex

    index_items.delay(make_items(300)).get(timeout=300)
    es.indices.refresh(index=alias(settings))
    before = es.count(index=alias(settings))["count"]
    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                hits = es.search(index=alias(settings), query={"match": {"title": "garden"}}, size=3)
                if not hits["hits"]["hits"]:
                    failures.append("empty result")
                reads += 1
            except Exception as exc:  # the test counts any failed read
                failures.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        result = reindex.delay().get(timeout=600)
    finally:
        stop.set()
        thread.join()
    assert failures == [] and reads > 10
    assert result["target"].endswith("-items-v2") and result["embedded"] == 0 and result["reused"] == 300
    assert lifecycle.current_index(es, settings) == result["target"]
    assert es.count(index=alias(settings))["count"] == before == 300
    versions = lifecycle.list_versions(es, settings)
    assert [v.version for v in versions] == [1, 2] and versions[1].is_current
    current, previous = lifecycle.rollback_target(es, settings)
    assert (current.name, previous.name) == (result["target"], lifecycle.physical_name(settings, "items", 1))


def test_worker_killed_mid_batch_loses_nothing(fresh, worker, es, settings):
    from workers.tasks import index_items

    items = make_items(400, prefix="k")
    pending = [index_items.delay(items[i:i + 50]) for i in range(0, len(items), 50)]
    deadline = time.time() + 120
    while es.count(index=alias(settings))["count"] == 0 and time.time() < deadline:
        time.sleep(0.2)
        es.indices.refresh(index=alias(settings))
    worker.kill()  # SIGKILL in the middle: later batches are unacknowledged or not started
    indexed_at_kill = es.count(index=alias(settings))["count"]
    assert indexed_at_kill < len(items)
    worker.start()
    for result in pending:
        result.get(timeout=300)
    es.indices.refresh(index=alias(settings))
    assert es.count(index=alias(settings))["count"] == len(items)
    ids = [h["_id"] for h in es.search(index=alias(settings), size=1000, source=False)["hits"]["hits"]]
    assert sorted(ids) == sorted(i["id"] for i in items)


def test_index_items_by_id_and_csv_ingest_in_process(fresh, worker, es, settings, tmp_path):
    from workers.cli import _read_items, ingest, main
    from workers.tasks import index_items

    path = tmp_path / "items.csv"
    path.write_text("id,title,description,category,tags,price,in_stock,version\n"
                    "c1,Rocket to the moon,Astronauts and a spacecraft,space,space|rocket,12.5,true,1\n"
                    "c2,Tomato soup,A chef cooks soup,cooking,cooking,3,false,1\n"
                    "c3,,missing title,cooking,,1,true,1\n")
    totals = ingest(_read_items(path), sync=True)
    assert totals["accepted"] == 2 and totals["indexed"] == 2 and totals["embedded"] == 2
    assert [e["index"] for e in totals["invalid"]] == [2]
    doc = es.get(index=alias(settings), id="c1")["_source"]
    assert doc["tags"] == ["space", "rocket"] and doc["price"] == 12.5 and doc["in_stock"] is True
    # By id: stored items are indexed again at their stored version, without re-embedding.
    result = index_items.delay(["c1", "c2", "nope"]).get(timeout=120)
    assert result["indexed"] == 2 and result["embedded"] == 0 and result["invalid"][0]["id"] == "nope"
    assert main(["indices"]) == 0


def test_worker_killed_mid_reindex_resumes_with_exact_counts(fresh, worker, es, settings):
    from workers.tasks import index_items, reindex

    index_items.delay(make_items(1500, prefix="r")).get(timeout=600)
    es.indices.refresh(index=alias(settings))
    task = reindex.delay()
    target = lifecycle.physical_name(settings, "items", 2)
    deadline = time.time() + 300
    while time.time() < deadline:
        if es.indices.exists(index=target):
            es.indices.refresh(index=target)
            if es.count(index=target)["count"] > 0:
                break
        time.sleep(0.1)
    worker.kill()
    partial = es.count(index=target)["count"]
    assert 0 < partial < 1500, partial
    assert lifecycle.current_index(es, settings) == lifecycle.physical_name(settings, "items", 1)
    worker.start()
    result = task.get(timeout=600)  # the same task, delivered again after the visibility timeout
    assert result["target"] == target
    assert lifecycle.current_index(es, settings) == target
    es.indices.refresh(index=alias(settings))
    assert es.count(index=alias(settings))["count"] == 1500
    assert [v.version for v in lifecycle.list_versions(es, settings)] == [1, 2]
