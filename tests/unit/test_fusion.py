"""Unit tests for indexer.fusion: hand-computed RRF, linear fusion, tie-breaking and the popularity prior."""
from __future__ import annotations

import math

import pytest

from indexer.fusion import (
    FusedHit,
    Hit,
    apply_popularity_prior,
    fuse_linear,
    fuse_rrf,
    normalize_minmax,
    normalize_zscore,
)

# BM25 likes "a" by a wide margin; the vector retriever never returned it. "b" and "c" are found by
# both. RRF rewards agreement between retrievers, linear fusion rewards score margins, so the two
# strategies disagree about "a" versus "c". Kept as the documented difference between them.
BM25 = [Hit("a", 10.0), Hit("b", 2.0), Hit("c", 1.0)]
KNN = [Hit("b", 0.9), Hit("c", 0.8)]


def ids(hits: list[FusedHit]) -> list[str]:
    return [hit.id for hit in hits]


def assert_adds_up(hits: list[FusedHit]) -> None:
    for hit in hits:
        assert hit.score == pytest.approx(sum(c.contribution for c in hit.sources.values()), abs=1e-12)


def test_rrf_hand_computed() -> None:
    fused = fuse_rrf({"bm25": BM25, "knn": KNN}, k=60)
    assert ids(fused) == ["b", "c", "a"]
    scores = {hit.id: hit.score for hit in fused}
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 62)
    b = fused[0].sources
    assert (b["bm25"].rank, b["bm25"].score, b["bm25"].normalized) == (2, 2.0, None)
    assert (b["knn"].rank, b["knn"].score) == (1, 0.9)
    assert "knn" not in fused[2].sources
    assert_adds_up(fused)


def test_rrf_weights_and_k() -> None:
    fused = fuse_rrf({"bm25": BM25, "knn": KNN}, k=1, weights={"bm25": 3.0, "knn": 0.5})
    scores = {hit.id: hit.score for hit in fused}
    assert scores["a"] == pytest.approx(3.0 / 2)
    assert scores["b"] == pytest.approx(3.0 / 3 + 0.5 / 2)
    assert scores["c"] == pytest.approx(3.0 / 4 + 0.5 / 3)
    assert ids(fused) == ["a", "b", "c"]
    assert fused[1].sources["knn"].contribution == pytest.approx(0.25)
    assert_adds_up(fused)


def test_rrf_tie_breaks_on_best_rank_then_id() -> None:
    # Ranks {1, 2} and {2, 1}: exactly equal scores and the same best rank, so the id decides.
    fused = fuse_rrf({"one": [Hit("y", 5.0), Hit("x", 4.0)], "two": [Hit("x", 1.0), Hit("y", 0.5)]})
    assert fused[0].score == fused[1].score
    assert ids(fused) == ["x", "y"]  # same best rank (1): id decides

    fused = fuse_rrf({"one": [Hit("m", 1.0)], "two": [Hit("z", 1.0)]}, weights={"one": 1.0, "two": 1.0})
    assert ids(fused) == ["m", "z"]

    # Equal scores, different best rank: the document some retriever put higher wins over the id.
    fused = fuse_rrf({"one": [Hit("q", 1.0), Hit("a", 0.5)], "two": [Hit("zz", 1.0)]}, k=1, weights={"two": 2 / 3})
    assert fused[1].score == fused[2].score == 1 / 3
    assert ids(fused) == ["q", "zz", "a"]


def test_duplicate_ids_in_one_ranking_count_once() -> None:
    fused = fuse_rrf({"bm25": [Hit("a", 3.0), Hit("a", 2.0), Hit("b", 1.0)]})
    scores = {hit.id: hit.score for hit in fused}
    assert scores == pytest.approx({"a": 1 / 61, "b": 1 / 62})


def test_normalize_minmax() -> None:
    assert normalize_minmax([10.0, 2.0, 1.0]) == pytest.approx([1.0, 1 / 9, 0.0])
    assert normalize_minmax([3.0]) == [1.0]
    assert normalize_minmax([2.0, 2.0]) == [1.0, 1.0]
    assert normalize_minmax([]) == []


def test_normalize_zscore() -> None:
    s = math.sqrt(2 / 3)
    assert normalize_zscore([3.0, 2.0, 1.0]) == pytest.approx([1 / s, 0.0, -1 / s])
    assert normalize_zscore([0.9, 0.8]) == pytest.approx([1.0, -1.0])
    assert normalize_zscore([7.0]) == [0.0]
    assert normalize_zscore([4.0, 4.0, 4.0]) == [0.0, 0.0, 0.0]
    assert normalize_zscore([]) == []


def test_linear_minmax_hand_computed_and_differs_from_rrf() -> None:
    fused = fuse_linear({"bm25": BM25, "knn": KNN}, normalization="minmax")
    scores = {hit.id: hit.score for hit in fused}
    assert scores == pytest.approx({"a": 1.0, "b": 1 / 9 + 1.0, "c": 0.0})
    assert ids(fused) == ["b", "a", "c"]
    assert ids(fuse_rrf({"bm25": BM25, "knn": KNN})) == ["b", "c", "a"]
    assert fused[0].sources["bm25"].normalized == pytest.approx(1 / 9)
    assert_adds_up(fused)


def test_linear_weights() -> None:
    fused = fuse_linear({"bm25": BM25, "knn": KNN}, weights={"bm25": 0.5, "knn": 2.0})
    scores = {hit.id: hit.score for hit in fused}
    assert scores == pytest.approx({"a": 0.5, "b": 0.5 / 9 + 2.0, "c": 0.0})
    assert fused[0].sources["knn"].contribution == pytest.approx(2.0)
    assert_adds_up(fused)


def test_linear_zscore_hand_computed() -> None:
    fused = fuse_linear({"bm25": BM25, "knn": KNN}, normalization="zscore")
    mean = 13 / 3
    std = math.sqrt(((10 - mean) ** 2 + (2 - mean) ** 2 + (1 - mean) ** 2) / 3)
    # Each source's z-scores are shifted so its worst returned document sits at 0.
    expected = {"a": 9 / std, "b": 1 / std + 2.0, "c": 0.0}
    assert {hit.id: hit.score for hit in fused} == pytest.approx(expected)
    assert ids(fused) == ["b", "a", "c"]
    assert_adds_up(fused)


def test_zscore_missing_doc_counts_as_source_minimum() -> None:
    # r is the BM25 retriever's worst hit but the vector retriever's best; s was only found by the
    # vector retriever, below r. Scoring s's absence from BM25 as 0 (BM25's *average*) would put s
    # and even q above r; treating absence as BM25's minimum keeps r, found by both, ahead.
    bm25 = [Hit("p", 3.0), Hit("q", 2.0), Hit("r", 1.0)]
    knn = [Hit("r", 4.0), Hit("s", 3.0), Hit("t", 1.0)]
    fused = fuse_linear({"bm25": bm25, "knn": knn}, normalization="zscore")
    bm25_std = math.sqrt(2 / 3)
    knn_std = math.sqrt(14) / 3
    expected = {"p": 2 / bm25_std, "q": 1 / bm25_std, "r": 3 / knn_std, "s": 2 / knn_std, "t": 0.0}
    assert {hit.id: hit.score for hit in fused} == pytest.approx(expected)
    assert ids(fused) == ["p", "r", "s", "q", "t"]
    assert "bm25" not in fused[2].sources  # s: absent, contributes exactly nothing
    assert fused[1].sources["bm25"].contribution == 0.0  # r: present at the minimum, also 0
    assert all(hit.score >= 0.0 for hit in fused)
    assert_adds_up(fused)


def test_linear_single_hit_source() -> None:
    rankings = {"bm25": [Hit("a", 3.0), Hit("b", 1.0)], "knn": [Hit("b", 0.7)]}
    minmax = {hit.id: hit.score for hit in fuse_linear(rankings)}
    assert minmax == pytest.approx({"a": 1.0, "b": 1.0})
    zscore = {hit.id: hit.score for hit in fuse_linear(rankings, normalization="zscore")}
    assert zscore == pytest.approx({"a": 2.0, "b": 0.0})


def test_popularity_prior_adds_up_and_resorts() -> None:
    fused = fuse_rrf({"bm25": [Hit("a", 2.0), Hit("b", 1.0), Hit("c", 0.5)]}, k=1)
    popularity = {"a": 0.0, "b": 99.0, "c": 9.0, "elsewhere": 999.0}
    boosted = apply_popularity_prior(fused, popularity, 0.6)
    scale = math.log1p(999.0)
    expected = {
        "a": 1 / 2,
        "b": 1 / 3 + 0.6 * math.log1p(99.0) / scale,
        "c": 1 / 4 + 0.6 * math.log1p(9.0) / scale,
    }
    assert {hit.id: hit.score for hit in boosted} == pytest.approx(expected)
    assert ids(boosted) == ["b", "a", "c"]
    prior = boosted[0].sources["popularity"]
    assert (prior.rank, prior.score) == (1, 99.0)
    assert prior.normalized == pytest.approx(math.log1p(99.0) / scale)
    assert boosted[1].sources["popularity"].contribution == 0.0
    assert_adds_up(boosted)
    assert "popularity" not in fused[0].sources  # the input is left alone


def test_popularity_prior_bounds_and_edge_cases() -> None:
    fused = fuse_linear({"bm25": [Hit("a", 2.0), Hit("b", 1.0), Hit("c", 0.0)]})
    boosted = apply_popularity_prior(fused, {"a": 10.0, "b": -5.0}, 0.25)
    contributions = {hit.id: hit.sources["popularity"].contribution for hit in boosted}
    assert contributions == pytest.approx({"a": 0.25, "b": 0.0, "c": 0.0})
    flat = apply_popularity_prior(fused, {}, 1.0)
    assert [hit.score for hit in flat] == [hit.score for hit in fused]
    with pytest.raises(ValueError, match="applied twice"):
        apply_popularity_prior(boosted, {}, 1.0)
    with pytest.raises(ValueError, match="popularity weight"):
        apply_popularity_prior(fused, {}, -0.1)


def test_input_validation() -> None:
    rankings = {"bm25": BM25}
    with pytest.raises(ValueError, match="k must be >= 1"):
        fuse_rrf(rankings, k=0)
    with pytest.raises(ValueError, match="'bm25'.*>= 0"):
        fuse_rrf(rankings, weights={"bm25": -1.0})
    with pytest.raises(ValueError, match="'knn'.*>= 0"):
        fuse_linear(rankings, weights={"knn": float("nan")})
    with pytest.raises(ValueError, match="unknown normalization 'l2'"):
        fuse_linear(rankings, normalization="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-finite"):
        fuse_linear({"bm25": [Hit("a", float("inf"))]})


def test_empty_inputs() -> None:
    assert fuse_rrf({}) == []
    assert fuse_linear({"bm25": [], "knn": []}) == []
    assert apply_popularity_prior([], {"a": 1.0}, 1.0) == []
