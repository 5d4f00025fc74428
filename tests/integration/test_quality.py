"""Recommendation quality cannot quietly regress: on a fixed sample of MovieLens-100K, through the real
training code (events index -> model -> promotion) and the real engine, the default list must stay well
above popularity and may not fall below the item-item retriever alone. Deterministic, not timed."""
from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE_USERS = 400
SAMPLE_SEED = 11


@pytest.fixture(scope="module")
def movielens_sample():
    import random

    from eval.datasets import Dataset, load_ml100k

    full = load_ml100k(REPO / ".hybridrec" / "datasets")
    users = sorted({i.user_id for i in full.interactions})
    chosen = set(random.Random(SAMPLE_SEED).sample(users, SAMPLE_USERS))
    return Dataset("ml-100k-sample", full.items, [i for i in full.interactions if i.user_id in chosen])


@pytest.mark.parametrize("protocol", ["recbole", "temporal"])
def test_default_beats_popularity_and_item_item_alone(movielens_sample, es, redis_client, settings, protocol):
    from eval.cli import drop_indices
    from eval.harness import EvalOptions, Harness
    from eval.strategies import default_strategies
    from indexer.settings import load_settings

    eval_settings = load_settings(index_prefix=f"{settings.index_prefix}-q", redis_url=settings.redis_url)
    strategies = [s for s in default_strategies(als=False) if s.name in ("popularity", "item-item", "default")]
    harness = Harness(eval_settings, movielens_sample)
    try:
        run = harness.run_protocol(protocol, EvalOptions(strategies=strategies))
    finally:
        drop_indices(harness.es, eval_settings)
        harness.clear_state()
    ndcg = {name: row["metrics"]["ndcg@10"] for name, row in run["strategies"].items()}
    assert run["model"]["state"] == "serving"
    assert ndcg["default"] >= 1.5 * ndcg["popularity"], ndcg
    assert ndcg["default"] >= ndcg["item-item"], ndcg
