"""Collaborative models on the real node, Redis and worker: training from the events index, scores equal
to the model's own prediction, the gate, promotion under reads, rollback, a killed training, one event
moving the next list, and cold items."""
from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

THEMES = ("space", "cooking", "jazz", "chess")
WORDS = {"space": "rocket orbit planet astronaut", "cooking": "recipe oven spice kitchen",
         "jazz": "saxophone swing trumpet blues", "chess": "opening gambit endgame rook"}
PER_THEME = 12


def catalog() -> list[dict[str, Any]]:
    return [{"id": f"{theme}.{n}", "title": f"{theme} {n}", "description": WORDS[theme], "category": theme,
             "version": 1} for theme in THEMES for n in range(PER_THEME)]


def history_events(users: int = 48, per_user: int = 8, seed: int = 5) -> list[dict[str, Any]]:
    """Each user stays inside one theme and favours its first items, so the item-item weights are strong."""
    rng = random.Random(seed)
    start = time.time() - 5 * 86400
    events = []
    for u in range(users):
        theme = THEMES[u % len(THEMES)]
        weights = [1.0 / (n + 1) for n in range(PER_THEME)]
        chosen: list[int] = []
        while len(chosen) < per_user:
            n = rng.choices(range(PER_THEME), weights)[0]
            if n not in chosen:
                chosen.append(n)
        for step, n in enumerate(chosen):
            ts = datetime.fromtimestamp(start + u * 600 + step * 10, tz=UTC).isoformat()
            events.append({"event_id": f"u{u}-{step}", "user_id": f"u{u}", "item_id": f"{theme}.{n}",
                           "type": "like" if step % 2 else "view", "weight": 4.0 if step % 2 else 1.0, "ts": ts})
    return events


@pytest.fixture()
def trained(fresh, es, settings):
    """A catalog, its event history in the events index, and a first model promoted."""
    from indexer.catalog import index_items
    from indexer.documents import validate_items
    from indexer.encoder import get_encoder
    from indexer.events import record_events
    from indexer.lifecycle import alias_name
    from indexer.promotion import promote
    from indexer.training import train

    items, errors = validate_items(catalog(), max_text_chars=settings.max_text_chars)
    assert not errors
    assert not index_items(es, settings, items, get_encoder(settings)).failed
    assert not record_events(es, settings, history_events()).failed
    es.indices.refresh(index=[alias_name(settings, "items"), alias_name(settings, "events")])
    result = train(es, settings, fast_options(), promote=lambda v: promote(es, settings, v))
    assert result.state == "serving", result.reason
    return result


def fast_options(**overrides: Any) -> Any:
    from indexer.training import TrainOptions

    defaults = {"lambdas": (10.0,), "recent_weights": (0.0, 1.0), "cf_weights": (0.0, 0.5), "user_weights": (0.0,),
                "popularity_weights": (0.0,), "min_events": 1, "neighbours": 20}
    return TrainOptions(**{**defaults, **overrides})


def test_item_item_scores_equal_the_models_prediction(trained, es, settings):
    from indexer import model_registry as registry
    from indexer import queries, search
    from indexer.filters import Filters
    from indexer.lifecycle import alias_name

    pointer = registry.read_pointer(es, settings)
    assert pointer.version == trained.version
    artifacts = registry.load_artifacts(es, settings, trained.version)
    row = {item: i for i, item in enumerate(artifacts.item_ids)}
    history = [("space.0", 2.5), ("space.3", 1.0), ("jazz.1", 0.25)]
    weights = np.zeros(len(artifacts.item_ids))
    for item, w in history:
        weights[row[item]] = w
    expected = weights @ artifacts.neighbours.toarray()

    body = queries.search_body(100, False, query=queries.item_item_query(
        f"cf_{pointer.slot}_neighbours", history, Filters()))
    hits = search.msearch(es, alias_name(settings, "items"), [("item_item", body)]).rankings["item_item"]
    assert {h.id for h in hits} == {artifacts.item_ids[j] for j in np.flatnonzero(expected > 0)}
    for hit in hits:
        want = expected[row[hit.id]]
        # Elasticsearch keeps 9 significant bits of each stored weight (rounded down): at most 2^-8 off.
        assert want * (1 - 2 ** -8) - 1e-9 <= hit.score <= want * (1 + 1e-6), (hit.id, hit.score, want)


def test_one_event_moves_the_next_response(trained, client):
    first = client.post("/v1/events", json={"user_id": "newcomer", "item_id": "chess.0", "type": "like"})
    assert first.status_code == 202
    body = client.get("/v1/users/newcomer/recommendations?k=5&explain=true").get_json()
    assert body["model_version"] == trained.version
    assert {"item_item", "cf_knn"} & set(body["retrievers"])
    assert all(item["category"] == "chess" for item in body["items"][:3]), body["items"]
    because = [item["explain"]["because"] for item in body["items"] if "item_item" in item["explain"]["sources"]]
    assert because and all(b["item_id"] == "chess.0" and b["retriever"] == "item_item" for b in because)

    client.post("/v1/events", json={"user_id": "newcomer", "item_id": "jazz.0", "type": "purchase"})
    client.post("/v1/events", json={"user_id": "newcomer", "item_id": "jazz.1", "type": "purchase"})
    after = client.get("/v1/users/newcomer/recommendations?k=5").get_json()
    assert after["profile_version"] == body["profile_version"] + 2
    assert [i["id"] for i in after["items"]] != [i["id"] for i in body["items"]]
    assert any(item["category"] == "jazz" for item in after["items"][:3]), after["items"]


def test_gate_refuses_a_worse_model_and_keeps_it_for_inspection(trained, es, settings):
    from indexer import model_registry as registry
    from indexer.promotion import promote
    from indexer.training import train

    # One neighbour per item and no latent retriever: a model deliberately much worse than the first.
    worse = train(es, settings, fast_options(neighbours=1, lambdas=(1e7,), cf_weights=(0.0,)),
                  promote=lambda v: promote(es, settings, v))
    assert worse.state == "refused", worse.as_dict()
    assert "below the serving model" in worse.reason
    assert registry.read_pointer(es, settings).version == trained.version
    kept = registry.load_model(es, settings, worse.version)
    assert kept is not None and kept.state == "refused" and kept.info["metrics"]


def test_promotion_under_reads_then_rollback(trained, es, settings, redis_client):
    from indexer import model_registry as registry
    from indexer.clients import make_redis
    from indexer.promotion import promote, rollback
    from indexer.read_params import ReadParams
    from indexer.recommender import Recommender
    from indexer.training import train

    # A reader with its own clients, like an API process, loops while the next model is written and flipped.
    reader = Recommender(settings.model_copy(update={"reco_cache_ttl": 0}), es, make_redis(settings), lambda: None)  # type: ignore[arg-type, return-value]
    from indexer.profile_store import AppliedEvent, ProfileStore

    store = ProfileStore(redis_client, settings)
    for n, item in enumerate(("cooking.0", "cooking.1")):
        store.apply("reader", None, AppliedEvent(item, 4.0, time.time() - 60 + n, None))
    served: list[int | None] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                reader.models.invalidate()
                body = reader.recommend("reader", ReadParams(k=5))
                assert body["items"] and not body["degraded"]
                served.append(body["model_version"])
            except BaseException as exc:  # every failure is counted, none may happen
                failures.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        second = train(es, settings, fast_options(gate_tolerance=1.0), promote=lambda v: promote(es, settings, v))
    finally:
        time.sleep(0.5)
        stop.set()
        thread.join(timeout=30)
    assert second.state == "serving", second.as_dict()
    assert failures == []
    assert set(served) <= {trained.version, second.version} and served[-1] == second.version
    assert served.index(second.version) > 0  # reads ran before and after the flip

    back = rollback(es, settings)
    assert back["from"] == second.version and back["to"] == trained.version
    pointer = registry.read_pointer(es, settings)
    assert pointer.version == trained.version and not pointer.history
    reader.models.invalidate()
    assert reader.recommend("reader", ReadParams(k=5))["model_version"] == trained.version
    with pytest.raises(Exception, match="nothing to roll back"):
        rollback(es, settings)


def test_a_new_item_gets_factors_from_its_content(trained, es, settings):
    from indexer import model_registry as registry
    from indexer.catalog import index_items
    from indexer.cf_serving import ModelCache
    from indexer.documents import validate_items
    from indexer.encoder import get_encoder
    from indexer.lifecycle import alias_name

    pointer = registry.read_pointer(es, settings)
    items, _ = validate_items([{"id": "space.new", "title": "space new", "description": WORDS["space"],
                                "category": "space", "version": 1}], max_text_chars=1000)
    index_items(es, settings, items, get_encoder(settings), ModelCache(es, settings).slot_models())
    doc = es.get(index=alias_name(settings, "items"), id="space.new",
                 source_includes=[f"cf_{pointer.slot}_factors", f"cf_{pointer.slot}_model"])["_source"]
    assert doc[f"cf_{pointer.slot}_model"] == trained.version
    factors = np.asarray(doc[f"cf_{pointer.slot}_factors"])
    artifacts = registry.load_artifacts(es, settings, trained.version)
    themes = {theme: artifacts.factors[[artifacts.item_ids.index(f"{theme}.{n}") for n in range(3)]].mean(axis=0)
              for theme in THEMES}
    # The content map puts the new item nearer its own theme's items than any other theme's.
    sims = {theme: float(factors @ vec / (np.linalg.norm(factors) * np.linalg.norm(vec)))
            for theme, vec in themes.items()}
    assert max(sims, key=sims.get) == "space", sims  # type: ignore[arg-type]


def test_killed_training_leaves_serving_intact(trained, es, settings, worker, tmp_path):
    from indexer import model_registry as registry
    from workers.tasks import train as train_task

    before = registry.read_pointer(es, settings)
    task = train_task.delay(True)
    deadline = time.time() + 120
    while time.time() < deadline and task.state != "PROGRESS":
        time.sleep(0.05)
    assert task.state == "PROGRESS", task.state
    worker.kill()
    after = registry.read_pointer(es, settings)
    assert (after.version, after.slot) == (before.version, before.slot)
    worker.start()
    # acks_late: the killed task comes back after the visibility timeout and finishes.
    result = task.get(timeout=180)
    assert result["state"] in ("serving", "refused"), result
    assert registry.read_pointer(es, settings).version in (before.version, result["version"])


def test_import_history_is_idempotent_and_keeps_liked_items_out_for_good(fresh, es, settings, redis_client, tmp_path):
    import json

    from indexer.catalog import index_items
    from indexer.documents import validate_items
    from indexer.encoder import get_encoder
    from indexer.lifecycle import alias_name
    from indexer.profile_store import ProfileStore
    from indexer.read_params import ReadParams
    from indexer.recommender import Recommender
    from workers.cli import main

    items, _ = validate_items(catalog(), max_text_chars=1000)
    index_items(es, settings, items, get_encoder(settings))
    es.indices.refresh(index=alias_name(settings, "items"))
    old = datetime(2020, 3, 1, tzinfo=UTC)  # years before the seen window
    lines = [{"user_id": "veteran", "item_id": f"jazz.{n}", "type": "like" if n < 3 else "view",
              "ts": old.replace(day=n + 1).isoformat()} for n in range(6)]
    lines.append({"user_id": "veteran", "item_id": "jazz.9", "type": "view"})  # no ts: refused
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    events = alias_name(settings, "events")
    for _ in range(2):
        assert main(["events", "import", str(path)]) == 0
        es.indices.refresh(index=events)
        assert es.count(index=events)["count"] == 6
    profile = ProfileStore(redis_client, settings).load("veteran")
    assert profile is not None and len(profile.interactions) == 6 and profile.version == 6
    engine = Recommender(settings.model_copy(update={"reco_cache_ttl": 0}), es, redis_client,
                         lambda: get_encoder(settings))
    ids = [hit["id"] for hit in engine.recommend("veteran", ReadParams(k=40))["items"]]
    # Likes stay out for good; views older than the seen window may come back.
    assert not {"jazz.0", "jazz.1", "jazz.2"} & set(ids)
    assert {"jazz.3", "jazz.4", "jazz.5"} & set(ids)
