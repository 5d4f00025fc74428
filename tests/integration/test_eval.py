"""`hybridrec eval` end to end on a small themed catalog: real indexer, profile store and engine, both protocols."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

THEMES = {
    "space": ["Mars rover", "Saturn rings", "Moon landing", "Rocket engines", "Black holes", "Comet hunters",
              "Astronaut training", "Jupiter moons", "Space station life", "Telescope nights"],
    "cooking": ["Sourdough bread", "Italian pasta", "Thai curry", "French pastry", "Grilled vegetables",
                "Soup recipes", "Chocolate desserts", "Spice blends", "Sushi rolls", "Pizza dough"],
    "football": ["World Cup finals", "Goalkeeper skills", "Penalty kicks", "Football tactics", "Striker drills",
                 "Stadium stories", "League champions", "Midfield passing", "Football boots", "Referee decisions"],
    "music": ["Jazz piano", "Guitar chords", "Symphony orchestra", "Drum rhythms", "Opera singers",
              "Violin lessons", "Rock concerts", "Music theory", "Blues harmonica", "Choir songs"],
}
DESCRIPTIONS = {
    "space": "planets, stars, rockets and space exploration",
    "cooking": "recipes, kitchen techniques and cooking food at home",
    "football": "football players, matches, goals and the football season",
    "music": "musicians, instruments, songs and music performance",
}


def write_dataset(directory: Path, seed: int = 3) -> tuple[Path, Path]:
    """40 items in 4 themes; 30 users who each stay inside one theme (8 items, likes and views)."""
    rng = random.Random(seed)
    items, ids_by_theme = [], {}
    for theme, titles in THEMES.items():
        ids_by_theme[theme] = []
        for n, title in enumerate(titles):
            item_id = f"{theme}-{n}"
            ids_by_theme[theme].append(item_id)
            items.append({"id": item_id, "title": f"{theme.title()}: {title}", "category": theme, "tags": [theme],
                          "description": f"A guide to {title.lower()}: {DESCRIPTIONS[theme]}."})
    events = []
    start = time.time() - 30 * 86400  # older than a session, so only the long-term interest vector is used
    for u in range(30):
        theme = list(THEMES)[u % len(THEMES)]
        for step, item_id in enumerate(rng.sample(ids_by_theme[theme], 8)):
            events.append({"user_id": f"user-{u}", "item_id": item_id, "type": rng.choice(["view", "like"]),
                           "ts": start + u * 3600 + step * 60})
    items_path, events_path = directory / "items.jsonl", directory / "events.jsonl"
    items_path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    events_path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return items_path, events_path


def test_eval_end_to_end_on_themed_data(tmp_path, es, redis_client, settings):
    from indexer.lifecycle import list_versions
    from indexer.settings import load_settings
    from workers.cli import main

    items_path, events_path = write_dataset(tmp_path)
    prefix = f"{settings.index_prefix}-ev"
    out = tmp_path / "results"
    code = main(["eval", "--dataset", "jsonl", "--items", str(items_path), "--events", str(events_path),
                 "--prefix", prefix, "--out", str(out)])
    assert code == 0

    for name in ("results.json", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert results["items"] == 40 and results["interactions"] == 240
    assert [run["protocol"] for run in results["protocols"]] == ["recbole", "temporal"]
    # The catalog is embedded once per run: the second protocol re-indexes (new popularity) without re-embedding.
    assert [run["indexing"]["embedded"] for run in results["protocols"]] == [40, 0]
    markdown = (out / "results.md").read_text()

    for run in results["protocols"]:
        rows = run["strategies"]
        assert list(rows) == ["popularity", "bm25", "vector", "hybrid-rrf", "hybrid-linear", "item-item", "item-recent",
                              "latent", "default", "ease-dense", "als"]
        assert run["users"] == 30
        popular = rows["popularity"]["metrics"]["recall@10"]
        # Every user stays in one theme, and popularity mixes all four: the content strategies must win.
        for name in ("bm25", "vector", "hybrid-rrf", "hybrid-linear"):
            assert rows[name]["metrics"]["recall@10"] > popular + 0.2, (run["protocol"], name, rows[name]["metrics"])
            assert rows[name]["metrics"]["hit@10"] >= 0.9, (run["protocol"], name)
            assert rows[name]["latency_ms"]["p50"] > 0
        # The collaborative model was trained from the events index and serves the default list.
        assert run["model"]["state"] == "serving" and run["model"]["events"] > 0
        for name in ("item-item", "default"):
            assert rows[name]["metrics"]["recall@10"] > popular + 0.2, (run["protocol"], name, rows[name]["metrics"])
        # 30 users are few for ALS (regularisation 10 is tuned for thousands): it must still beat popularity.
        assert rows["latent"]["metrics"]["recall@10"] > popular, (run["protocol"], rows["latent"]["metrics"])
        # BM25 returns only items sharing a word with the query; kNN always fills the list.
        assert rows["vector"]["short_lists"] == 0
        assert 0 < rows["vector"]["coverage@10"] <= 1 and rows["vector"]["diversity@10"] > 0
        assert f"## protocol: {run['protocol']}" in markdown
        assert run["paired"]["ndcg@10"]["hybrid-rrf - hybrid-linear"]["n"] == 30
        assert run["paired"]["ndcg@10"]["default - popularity"]["n"] == 30

    # The run removed its indices and Redis keys.
    eval_settings = load_settings(index_prefix=prefix)
    assert not any(list_versions(es, eval_settings, kind) for kind in ("items", "events", "users", "models"))
    assert not list(redis_client.scan_iter(match=f"{prefix}:*"))
