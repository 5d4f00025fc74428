"""Pure parts of the collaborative path: interaction histories, the training data split, request
parameter resolution, query bodies, offline scoring and the serving model's request-time maths."""
from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from indexer import cf_scoring, cf_serving, interactions
from indexer.cf_scoring import FusionSetting, Scorer, batch_ndcg, fold_in_weights, recency_weights
from indexer.cf_serving import ServingModel
from indexer.filters import Filters
from indexer.fusion import Hit
from indexer.interactions import Interaction, fold, record
from indexer.model_registry import Artifacts
from indexer.queries import item_item_query, knn_clause, search_body
from indexer.read_params import ReadParams
from indexer.training_data import histories_from_events, split_holdout


def test_record_keeps_the_strongest_weight_and_newest_time_and_drops_disliked_items() -> None:
    history = record((), "a", 1.0, 10.0)
    history = record(history, "b", 4.0, 20.0)
    history = record(history, "a", 4.0, 30.0)
    assert [(e.item_id, e.weight, e.ts) for e in history] == [("a", 4.0, 30.0), ("b", 4.0, 20.0)]
    history = record(history, "b", -4.0, 40.0)
    assert [e.item_id for e in history] == ["a"]
    late = record(history, "c", 1.0, 5.0)  # a late event lands in its place by time
    assert [e.item_id for e in late] == ["a", "c"]
    assert len(record(tuple(Interaction(str(i), 1.0, float(i)) for i in range(5)), "x", 1.0, 99.0, limit=3)) == 3


def test_fold_gives_what_record_gives_event_by_event() -> None:
    rng = random.Random(4)
    events = sorted((rng.uniform(0, 100), f"i{rng.randrange(30)}", rng.choice([1.0, 4.0, -4.0])) for _ in range(300))
    one_by_one: tuple[Interaction, ...] = ()
    for ts, item, weight in events:
        one_by_one = record(one_by_one, item, weight, ts, limit=10_000)
    assert fold(events) == one_by_one
    assert interactions.decode(interactions.encode(one_by_one)) == one_by_one


def test_holdout_takes_the_newest_and_a_share_of_the_other_items_of_users_with_enough_history() -> None:
    events = [{"user_id": f"u{u}", "item_id": f"i{n}", "weight": 1.0, "ts": float(n)}
              for u in range(4) for n in (range(u + 2) if u < 3 else range(41))]
    data = histories_from_events(events)
    holdout = split_holdout(data, seed=1, min_history=3, random_share=0.1)
    eligible = [row for row, h in enumerate(data.histories) if len(h) >= 3]
    assert sorted(holdout.slices["next"]) == eligible == sorted(holdout.slices["random"])
    for row in eligible:
        newest = data.histories[row][-1][0]
        assert holdout.slices["next"][row] == {newest}
        assert newest not in holdout.slices["random"][row]
        # One item at least, a tenth of the older ones for a long history (40 older items: 4).
        older = len(data.histories[row]) - 1
        assert len(holdout.slices["random"][row]) == max(1, round(0.1 * older))
        kept = {item for item, _, _ in holdout.train.histories[row]}
        assert not kept & (holdout.slices["next"][row] | holdout.slices["random"][row])
        assert len(kept) == len(data.histories[row]) - 1 - len(holdout.slices["random"][row]) > 0


def test_pick_bounds_the_random_slice_and_takes_the_best_next_item_setting_within_the_bound() -> None:
    from indexer.training import Trial, pick

    def trial(name: str, nxt: float, rnd: float, floor_next: float = 0.0) -> Trial:
        return Trial({"name": name}, {"next": nxt, "random": rnd}, {"next": floor_next, "random": 0.0})

    trials = [trial("flat", 0.060, 0.250), trial("tilted", 0.065, 0.246), trial("steep", 0.080, 0.220),
              trial("below-its-item-list", 0.070, 0.249, floor_next=0.075)]
    # steep loses 12% on the random slice; the last one loses to its own item-item list on next.
    assert trials[pick(trials, 0.02)].setting["name"] == "tilted"
    assert trials[pick(trials, 0.0)].setting["name"] == "flat"
    assert trials[pick(trials, 1.0)].setting["name"] == "steep"
    # Nothing passes its item-item floor: the bound alone decides.
    assert pick([trial("a", 0.05, 0.2, 0.9), trial("b", 0.06, 0.199, 0.9)], 0.02) == 1


def test_parameters_left_out_take_the_models_values_and_explicit_ones_win() -> None:
    learned = {"fusion": "linear", "w_item": 1.0, "w_recent": 0.5, "w_cf": 0.5, "w_user": 0.0,
               "popularity_weight": 0.1}
    resolved = ReadParams().resolved(learned)
    assert (resolved.fusion, resolved.w_item, resolved.w_user, resolved.popularity_weight) == ("linear", 1.0, 0.0, 0.1)
    explicit = ReadParams(w_user=2.0, fusion="rrf").resolved(learned)
    assert (explicit.fusion, explicit.w_user, explicit.w_cf) == ("rrf", 2.0, 0.5)
    plain = ReadParams().resolved(None)
    assert (plain.fusion, plain.w_user, plain.w_item, plain.popularity_weight) == ("rrf", 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        ReadParams(w_bm25=0, w_user=0, w_query=0, w_item=0, w_recent=0, w_cf=0)


def test_item_item_query_boosts_one_term_per_history_item_inside_the_filters() -> None:
    filters = Filters(categories=("books",), exclude_ids=("seen",))
    body = item_item_query("cf_a_neighbours", [("x.1", 2.0), ("y", 0.5), ("z", 0.0)], filters)
    assert body["bool"]["should"] == [{"term": {"cf_a_neighbours": {"value": "x.1", "boost": 2.0}}},
                                      {"term": {"cf_a_neighbours": {"value": "y", "boost": 0.5}}}]
    assert body["bool"]["minimum_should_match"] == 1
    # The filters sit in the query's own bool, not nested as one clause (Lucene walks that twice as slowly).
    assert body["bool"]["filter"] == [{"terms": {"category": ["books"]}}]
    assert body["bool"]["must_not"] == [{"ids": {"values": ["seen"]}}]
    assert "filter" not in item_item_query("f", [("x", 1.0)], Filters(exclude_ids=("seen",)))["bool"]
    assert set(item_item_query("f", [("x", 1.0)], Filters())["bool"]) == {"should", "minimum_should_match"}
    knn = knn_clause(np.array([1.0, 2.0]), filters, 10, 100, field="cf_b_factors")
    assert knn["field"] == "cf_b_factors" and knn["filter"] == filters.clause() and knn["num_candidates"] == 100
    # Nothing reads the hit count: no search counts its matches (counting keeps Lucene from skipping blocks).
    assert search_body(100, False, query=body)["track_total_hits"] is False


def test_recency_weights_halve_every_half_life() -> None:
    assert recency_weights(3, 1.0, 1.0).tolist() == [0.25, 0.5, 1.0]
    assert recency_weights(2, 0.0, 5.0).tolist() == [1.0, 1.0]


def test_batch_ndcg_matches_the_definition() -> None:
    ranked = np.array([[3, 1, 2], [5, 6, 7]])
    valid = np.ones_like(ranked, dtype=bool)
    out = batch_ndcg(ranked, valid, [{1}, {9}], k=3)
    assert out[0] == pytest.approx(1 / np.log2(3)) and out[1] == 0.0
    both = batch_ndcg(ranked, valid, [{3, 2}, {5}], k=3)
    assert both[0] == pytest.approx((1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3)))


def test_linear_fusion_in_the_scorer_follows_the_weights() -> None:
    # Two users, four items; the "a" retriever ranks item 1 first, "b" ranks item 2 first.
    histories = [[(0, 1.0, 0.0)], [(0, 1.0, 0.0)]]
    scorer = Scorer(histories, 4, np.ones(4))
    a = scorer.top_lists(lambda rows: np.tile([0.0, 3.0, 2.0, 1.0], (len(rows), 1)), [0, 1], depth=3)
    b = scorer.top_lists(lambda rows: np.tile([0.0, 1.0, 3.0, 2.0], (len(rows), 1)), [0, 1], depth=3)
    targets = {0: {1}, 1: {1}}
    assert scorer.evaluate({"a": a, "b": b}, FusionSetting({"a": 1.0, "b": 0.2}), targets) == 1.0
    assert scorer.evaluate({"a": a, "b": b}, FusionSetting({"a": 0.2, "b": 1.0}), targets) < 1.0


def serving_model() -> ServingModel:
    ids = ["a", "b", "c", "d"]
    positive = csr_matrix(np.array([[0, 0.5, 0.2, 0], [0, 0, 0.4, 0.1], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    negative = csr_matrix(np.array([[0, 0, 0, 0.3], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    factors = np.eye(4, 2, dtype=np.float32)
    artifacts = Artifacts(ids, factors, factors.T @ factors, np.zeros((3, 2), dtype=np.float32), positive, negative)
    info = {"params": {"recent_half_life": 1.0, "als_regularization": 0.1, "als_alpha": 1.0, "w_item": 1.0}}
    return ServingModel(1, "a", info, artifacts)


def test_serving_model_rescores_because_and_weights() -> None:
    model = serving_model()
    history = [Interaction("b", 1.0, 20.0), Interaction("a", 4.0, 10.0), Interaction("zz", 1.0, 5.0)]
    assert model.history_weights(history) == [("b", 1.0), ("a", 1.0)]  # unknown items left out
    assert model.history_weights(history, recent=True) == [("b", 1.0), ("a", 0.5)]
    # Elasticsearch's positive scores for d: 0.1 (from b); minus a's negative weight 0.3 x 1.
    rescored = model.rescore([Hit("d", 0.1), Hit("c", 0.6)], [("a", 1.0), ("b", 1.0)])
    assert [h.id for h in rescored] == ["c", "d"] and rescored[1].score == pytest.approx(-0.2)
    assert model.because("c", [("a", 1.0), ("b", 1.0)])["item_id"] == "b"  # 0.4 beats 0.2
    assert model.because("c", [("a", 3.0), ("b", 1.0)])["item_id"] == "a"
    assert model.user_factor(history) is not None and model.user_factor([Interaction("zz", 1.0, 1.0)]) is None
    assert model.defaults() == {"w_item": 1.0}


@pytest.mark.parametrize("boost", [0.0, 10.0])
def test_serving_fold_in_equals_the_scorers_latent_list_and_leans_to_the_newest_items(boost: float) -> None:
    rng = np.random.default_rng(3)
    ids = [f"i{n}" for n in range(6)]
    factors = rng.normal(size=(6, 3)).astype(np.float32)
    artifacts = Artifacts(ids, factors, factors.T @ factors, np.zeros((3, 3), dtype=np.float32),
                          csr_matrix((6, 6), dtype=np.float32), csr_matrix((6, 6), dtype=np.float32))
    info = {"params": {"als_regularization": 0.5, "als_alpha": 1.0, "cf_recency": boost, "cf_half_life": 2.0}}
    model = ServingModel(1, "a", info, artifacts)
    # The profile's history is newest first; the scorer's training history oldest first (item, weight, ts).
    history = [Interaction("i4", 1.0, 40.0), Interaction("i1", 4.0, 30.0), Interaction("i0", 1.0, 20.0),
               Interaction("i3", 1.0, 10.0)]
    scorer = Scorer([[(int(e.item_id[1:]), e.weight, e.ts) for e in reversed(history)]], 6, np.ones(6))
    served = factors @ model.user_factor(history)
    offline = scorer.latent(factors, 0.5, 1.0, boost, 2.0)([0])[0]
    assert np.allclose(served, offline, atol=1e-4)
    assert fold_in_weights(3, boost, 2.0).tolist() == pytest.approx([1 + boost, 1 + boost / 2 ** 0.5, 1 + boost / 2])
    if boost:  # the newest item gains on the oldest against the flat fold-in
        flat = factors @ ServingModel(1, "a", {"params": {**info["params"], "cf_recency": 0.0}}, artifacts).user_factor(
            history)
        assert served[4] - served[3] > flat[4] - flat[3]


def test_long_histories_query_their_newest_items_served_and_offline_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """The long-term item-item query stops at ITEM_QUERY_TERMS history items, newest first, and the scorer
    that chooses the model's settings sees the same cut (its item-item list is the served one)."""
    monkeypatch.setattr(cf_scoring, "ITEM_QUERY_TERMS", 2)
    monkeypatch.setattr(cf_serving, "ITEM_QUERY_TERMS", 2)
    model = serving_model()
    history = [Interaction("c", 1.0, 40.0), Interaction("zz", 1.0, 35.0), Interaction("b", 1.0, 30.0),
               Interaction("a", 1.0, 20.0)]
    assert model.history_weights(history) == [("c", 1.0), ("b", 1.0)]  # a, the oldest known item, is cut
    assert len(model.history_weights(history, recent=True)) == 2
    # Offline, items 0-4: 0 points to 3, 1 and 2 to 4. The history 0, 1, 2 (oldest first) cut to its newest
    # two items leaves 4 the only hit; 3 came from the cut item 0.
    positive = csr_matrix(np.array([[0, 0, 0, 1.0, 0], [0, 0, 0, 0, 1.0], [0, 0, 0, 0, 0.5], [0] * 5, [0] * 5]))
    scorer = Scorer([[(0, 1.0, 10.0), (1, 1.0, 20.0), (2, 1.0, 30.0)]], 5, np.ones(5))
    top = scorer.item_item_lists(positive, csr_matrix((5, 5)), 0.0, 10.0, [0], depth=3)
    assert [int(i) for i, ok in zip(top.indices[0], top.valid[0], strict=True) if ok] == [4]
    monkeypatch.setattr(cf_scoring, "ITEM_QUERY_TERMS", 3)
    top = Scorer(scorer.histories, 5, np.ones(5)).item_item_lists(positive, csr_matrix((5, 5)), 0.0, 10.0, [0], depth=3)
    assert sorted(int(i) for i, ok in zip(top.indices[0], top.valid[0], strict=True) if ok) == [3, 4]


def test_artifacts_round_trip() -> None:
    artifacts = serving_model().artifacts
    back = Artifacts.from_bytes(artifacts.to_bytes())
    assert back.item_ids == artifacts.item_ids
    assert np.array_equal(back.factors, artifacts.factors)
    assert (back.neighbours != artifacts.neighbours).nnz == 0
    assert back.negatives is not None and (back.negatives != artifacts.negatives).nnz == 0


def test_cold_neighbours_borrow_the_nearest_warm_items_weights_net_of_negatives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from indexer import cf_serving

    ids = ["a", "b", "c"]
    # Source rows, target columns: B[a, b] = 0.5, B[c, b] = 0.2, B[a, c] = 0.4, B[b, c] = 0.1, B[c, a] = 0.2;
    # one negative weight, N[b, a] = 0.3.
    positive = csr_matrix(np.array([[0, 0.5, 0.4], [0, 0, 0.1], [0.2, 0.2, 0]], dtype=np.float32))
    negative = csr_matrix(np.array([[0, 0, 0], [0.3, 0, 0], [0, 0, 0]], dtype=np.float32))
    factors = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    model = ServingModel(1, "a", {}, Artifacts(ids, factors, factors.T @ factors, np.zeros((3, 2), dtype=np.float32),
                                               positive, negative))
    s = 1 / np.sqrt(2)  # cosine of c with a and with b
    monkeypatch.setattr(cf_serving, "COLD_NEIGHBOUR_ITEMS", 2)
    monkeypatch.setattr(cf_serving, "COLD_NEIGHBOUR_DISCOUNT", 1.0)
    # Nearest to (0, 2): b (cosine 1), then c: b's incoming weights and c's, by similarity share, cut to as
    # many sources as a warm item stores (2): b's own 0.1 * s / (1 + s), the smallest, is left out.
    got = model.cold_neighbours(np.array([0.0, 2.0], dtype=np.float32))
    assert got == pytest.approx({"a": (0.5 + 0.4 * s) / (1 + s), "c": 0.2 / (1 + s)})
    # Nearest to (1, 0): a, then c. a's negative weight from b outweighs c's 0.1 from b: b is left out (a
    # stored weight must be positive).
    got = model.cold_neighbours(np.array([1.0, 0.0], dtype=np.float32))
    assert got == pytest.approx({"c": 0.2 / (1 + s), "a": 0.4 * s / (1 + s)})
    monkeypatch.setattr(cf_serving, "COLD_NEIGHBOUR_ITEMS", 1)
    assert model.cold_neighbours(np.array([0.0, 2.0], dtype=np.float32)) == pytest.approx({"a": 0.5, "c": 0.2})
    monkeypatch.setattr(cf_serving, "COLD_NEIGHBOUR_DISCOUNT", 0.5)  # a borrowed weight counts half
    assert model.cold_neighbours(np.array([0.0, 2.0], dtype=np.float32)) == pytest.approx({"a": 0.25, "c": 0.1})
    assert model.cold_neighbours(None) is None and model.cold_neighbours(np.zeros(2, dtype=np.float32)) is None
