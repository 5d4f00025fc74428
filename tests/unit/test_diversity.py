"""Unit tests for indexer.diversity: MMR re-ranking and intra-list diversity on constructed vectors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from indexer.diversity import intra_list_diversity, mmr


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


# a and b are near-duplicates (cosine ~0.99); c points elsewhere and is the least relevant.
VECTORS = {"a": unit(1.0, 0.0), "b": unit(0.99, 0.14), "c": unit(0.0, 1.0)}
RELEVANCE = {"a": 1.0, "b": 0.9, "c": 0.8}


def test_lambda_one_keeps_relevance_order() -> None:
    assert mmr(["a", "b", "c"], RELEVANCE, VECTORS, lambda_=1.0, k=3) == ["a", "b", "c"]


def test_low_lambda_picks_dissimilar_item_second() -> None:
    # Second pick with lambda 0.3: b scores 0.3 * 0.5 - 0.7 * 0.99 < 0, c scores 0.3 * 0 - 0.7 * 0 = 0.
    assert mmr(["a", "b", "c"], RELEVANCE, VECTORS, lambda_=0.3, k=3) == ["a", "c", "b"]
    assert mmr(["a", "b", "c"], RELEVANCE, VECTORS, lambda_=0.3, k=2) == ["a", "c"]


def test_relevance_scale_does_not_matter() -> None:
    scaled = {doc_id: 1000.0 * score + 5.0 for doc_id, score in RELEVANCE.items()}
    for lambda_ in (0.0, 0.3, 0.7, 1.0):
        assert mmr(["a", "b", "c"], scaled, VECTORS, lambda_=lambda_, k=3) == mmr(
            ["a", "b", "c"], RELEVANCE, VECTORS, lambda_=lambda_, k=3
        )


def test_missing_vector_means_no_similarity() -> None:
    # Without a vector b is no longer a near-duplicate of a, so relevance alone ranks it second.
    vectors = {"a": VECTORS["a"], "c": VECTORS["c"]}
    assert mmr(["a", "b", "c"], RELEVANCE, vectors, lambda_=0.3, k=3) == ["a", "b", "c"]
    assert mmr(["a", "b", "c"], RELEVANCE, {}, lambda_=0.3, k=3) == ["a", "b", "c"]


def test_mmr_edge_cases() -> None:
    assert mmr([], {}, {}, lambda_=0.5, k=3) == []
    assert mmr(["a", "b"], RELEVANCE, VECTORS, lambda_=0.5, k=0) == []
    assert mmr(["a", "a", "b"], RELEVANCE, VECTORS, lambda_=1.0, k=5) == ["a", "b"]
    # Equal relevance and no vectors: candidate order decides.
    assert mmr(["c", "a", "b"], {"a": 1.0, "b": 1.0, "c": 1.0}, {}, lambda_=0.5, k=3) == ["c", "a", "b"]


def test_mmr_validation() -> None:
    with pytest.raises(ValueError, match="lambda_"):
        mmr(["a"], RELEVANCE, VECTORS, lambda_=1.5, k=1)
    with pytest.raises(ValueError, match="k must be >= 0"):
        mmr(["a"], RELEVANCE, VECTORS, lambda_=0.5, k=-1)
    with pytest.raises(ValueError, match="no relevance"):
        mmr(["a", "zz"], RELEVANCE, VECTORS, lambda_=0.5, k=1)
    with pytest.raises(ValueError, match="different shapes"):
        mmr(["a", "b"], RELEVANCE, {"a": unit(1.0, 0.0), "b": unit(1.0, 0.0, 0.0)}, lambda_=0.5, k=2)


def test_intra_list_diversity() -> None:
    # Pairs: a-b cosine 0.99/|(0.99, 0.14)|, a-c 0, b-c 0.14/|(0.99, 0.14)|.
    norm = math.hypot(0.99, 0.14)
    expected = ((1 - 0.99 / norm) + 1.0 + (1 - 0.14 / norm)) / 3
    assert intra_list_diversity(["a", "b", "c"], VECTORS) == pytest.approx(expected, abs=1e-6)
    assert intra_list_diversity(["a", "c"], VECTORS) == pytest.approx(1.0)
    assert intra_list_diversity(["a", "a"], VECTORS) == 0.0
    assert intra_list_diversity(["a", "zz"], VECTORS) == 0.0
    assert intra_list_diversity([], VECTORS) == 0.0
    opposite = {"x": unit(1.0, 0.0), "y": unit(-1.0, 0.0)}
    assert intra_list_diversity(["x", "y"], opposite) == pytest.approx(2.0)
