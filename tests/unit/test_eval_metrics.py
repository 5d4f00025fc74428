"""Unit tests for the evaluation's pure parts: metrics against hand-computed cases, split invariants, adapters."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from eval.datasets import Dataset, Interaction, parse_atomic, recbole_interactions
from eval.metrics import (
    coverage,
    hit_at_k,
    mean_rows,
    mrr_at_k,
    ndcg_at_k,
    paired_difference,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)
from eval.protocols import group_by_user, ratio_counts, split_leave_last_out, split_ratio
from eval.strategies import history_text

# Relevant items sit at ranks 2 and 5; "z" is relevant but never retrieved.
RANKED = ["a", "b", "c", "d", "e"]
RELEVANT = {"b", "e", "z"}
IDCG3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # three relevant items fill ranks 1-3 of the ideal list


def test_metrics_at_5_by_hand() -> None:
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert precision_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 5)
    assert hit_at_k(RANKED, RELEVANT, 5) == 1.0
    assert mrr_at_k(RANKED, RELEVANT, 5) == pytest.approx(1 / 2)
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / IDCG3)
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(0.477623, abs=1e-6)


def test_metrics_cut_at_k() -> None:
    assert recall_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert precision_at_k(RANKED, RELEVANT, 3) == pytest.approx(1 / 3)
    assert ndcg_at_k(RANKED, RELEVANT, 3) == pytest.approx((1 / math.log2(3)) / IDCG3)
    for fn in (recall_at_k, precision_at_k, hit_at_k, mrr_at_k, ndcg_at_k):
        assert fn(RANKED, RELEVANT, 1) == 0.0


def test_ideal_dcg_uses_at_most_k_relevant_items() -> None:
    # Two relevant items but k = 1: a hit at rank 1 is already perfect.
    assert ndcg_at_k(["x", "y"], {"x", "y"}, 1) == pytest.approx(1.0)
    assert ndcg_at_k(["y", "x"], {"x", "y"}, 2) == pytest.approx(1.0)


def test_short_list_and_empty_relevance() -> None:
    assert precision_at_k(["b"], {"b"}, 10) == pytest.approx(0.1)  # divided by k, as RecBole does
    assert recall_at_k(["b"], {"b"}, 10) == 1.0
    assert ndcg_at_k(["b"], {"b"}, 10) == 1.0
    assert recall_at_k(RANKED, set(), 10) == 0.0
    assert ndcg_at_k(RANKED, set(), 10) == 0.0
    assert mrr_at_k([], {"b"}, 10) == 0.0


def test_duplicate_ids_count_once() -> None:
    assert recall_at_k(["b", "b", "c"], {"b", "c"}, 2) == 1.0
    assert precision_at_k(["b", "b"], {"b"}, 2) == pytest.approx(0.5)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError):
        recall_at_k(RANKED, RELEVANT, 0)


def test_ranking_metrics_keys_and_mean() -> None:
    row = ranking_metrics(RANKED, RELEVANT, ks=(5, 10))
    assert set(row) == {f"{m}@{k}" for m in ("recall", "ndcg", "mrr", "hit", "precision") for k in (5, 10)}
    assert row["precision@10"] == pytest.approx(0.2)
    assert mean_rows([{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 0.5}]) == {"a": 0.5, "b": 0.25}
    assert mean_rows([]) == {}


def test_coverage_and_percentile() -> None:
    from indexer.telemetry import percentile

    lists = [["a", "b"], ["b", "c"]]
    assert coverage(lists, 10, 1) == pytest.approx(0.2)
    assert coverage(lists, 10, 2) == pytest.approx(0.3)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([float(x) for x in range(1, 101)], 95) == pytest.approx(95.05)
    assert math.isnan(percentile([], 50))


def test_paired_difference_by_hand() -> None:
    # Differences 1, 0, 1: mean 2/3, sample sd sqrt(1/3), half-width 1.96 * sd / sqrt(3).
    result = paired_difference([1.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    half = 1.96 * math.sqrt(1 / 3) / math.sqrt(3)
    assert result["mean"] == pytest.approx(2 / 3) and result["n"] == 3
    assert (result["low"], result["high"]) == (pytest.approx(2 / 3 - half), pytest.approx(2 / 3 + half))
    with pytest.raises(ValueError):
        paired_difference([1.0], [])


# -- splits ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("total, expected", [(10, [8, 1, 1]), (8, [6, 1, 1]), (20, [16, 2, 2]), (25, [21, 2, 2]),
                                             (2, [1, 0, 1]), (1, [1, 0, 0])])
def test_ratio_counts_match_recbole(total: int, expected: list[int]) -> None:
    assert ratio_counts(total, (0.8, 0.1, 0.1)) == expected


def events(n_users: int = 6, n_items: int = 23) -> list[Interaction]:
    out = []
    for u in range(n_users):
        for i in range(n_items - u):  # users of different sizes
            out.append(Interaction(f"u{u}", f"i{i}", float(1000 * u + (i * 7) % n_items), "view"))
    out.append(Interaction("u0", "i3", 5000.0, "purchase"))  # a second event on an item u0 already viewed
    return out


def test_ratio_split_partitions_each_users_items() -> None:
    data = events()
    result = split_ratio(data, seed=7)
    for user, items in group_by_user(data).items():
        train, valid, test = set(result.train_items(user)), set(result.valid[user]), set(result.test[user])
        assert not (train & valid or train & test or valid & test)
        assert train | valid | test == set(items)
        assert [len(train), len(valid), len(test)] == ratio_counts(len(items), (0.8, 0.1, 0.1))
    # Both events on u0/i3 stay on one side of the split.
    i3 = [e.type for e in result.train["u0"] if e.item_id == "i3"]
    assert i3 in ([], ["view", "purchase"])
    assert ("i3" in result.train_items("u0")) == bool(i3)


def test_ratio_split_is_seeded() -> None:
    assert split_ratio(events(), seed=7).test == split_ratio(events(), seed=7).test
    assert split_ratio(events(), seed=7).test != split_ratio(events(), seed=8).test


def test_leave_last_out_holds_out_the_newest_items() -> None:
    data = [Interaction("u", "old", 1.0, "view"), Interaction("u", "newest", 9.0, "like"),
            Interaction("u", "mid", 5.0, "view"), Interaction("u", "old", 10.0, "purchase"),
            Interaction("u", "tie-a", 3.0, "view"), Interaction("u", "tie-b", 3.0, "view"),
            Interaction("solo", "x", 1.0, "view")]
    result = split_leave_last_out(data)
    assert result.test["u"] == ["newest"] and result.valid["u"] == ["mid"]
    # "old" was first seen at 1.0: a later purchase does not make it the newest item, and it trains whole.
    assert [e.type for e in result.train["u"] if e.item_id == "old"] == ["view", "purchase"]
    assert result.train_items("u") == ["old", "tie-a", "tie-b"]  # equal timestamps keep file order
    assert result.test["solo"] == ["x"] and result.valid["solo"] == [] and result.train["solo"] == []


def test_popularity_counts_training_users_only() -> None:
    data = [Interaction("a", "x", 1.0, "view"), Interaction("a", "x", 2.0, "like"), Interaction("a", "y", 3.0, "view"),
            Interaction("a", "z", 4.0, "view"), Interaction("b", "x", 1.0, "view"), Interaction("b", "q", 2.0, "view"),
            Interaction("b", "w", 3.0, "view")]
    assert split_leave_last_out(data).popularity() == Counter({"x": 2})


# -- adapters and query text ------------------------------------------------------------------------------------
def test_atomic_rows_and_rating_mapping() -> None:
    rows = parse_atomic("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t99\n1\t11\t3\t98\n")
    assert rows[0] == {"user_id": "1", "item_id": "10", "rating": "4", "timestamp": "99"}
    mapped = recbole_interactions(rows)
    assert [(e.item_id, e.type, e.ts) for e in mapped] == [("10", "like", 99.0), ("11", "view", 98.0)]


def test_dataset_drops_events_on_unknown_items() -> None:
    data = Dataset("d", [{"id": "1", "title": "t"}], [Interaction("u", "1", 1.0, "view"),
                                                      Interaction("u", "2", 2.0, "view")])
    assert [e.item_id for e in data.interactions] == ["1"] and data.dropped == 1


def test_history_text_fits_the_query_limit() -> None:
    assert history_text(["Toy Story", "  Heat  "]) == "Toy Story; Heat"
    text = history_text([f"Movie number {n}" for n in range(200)])
    assert len(text) <= 1000 and text.startswith("Movie number 0; ")
    assert all(part.startswith("Movie number ") for part in text.split("; "))  # cut between titles
    assert len(history_text(["word " * 300])) <= 1000
    assert history_text([]) == ""
