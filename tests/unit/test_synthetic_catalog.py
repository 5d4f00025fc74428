"""The benchmarks' synthetic catalog: the vectors are reproducible chunk by chunk, and the chunked exact
search that kNN recall is measured against agrees with a plain full sort."""
from __future__ import annotations

import numpy as np

from bench.synthetic import catalog_vectors, exact_top, held_out_queries


def full_catalog(n: int, clusters: int | None) -> np.ndarray:
    return np.concatenate([vectors for _, vectors in catalog_vectors(n, clusters)])


def test_catalog_vectors_are_reproducible_unit_vectors_in_order() -> None:
    chunks = list(catalog_vectors(2500, 50))
    assert [start for start, _ in chunks] == [0, 1000, 2000]
    assert [len(v) for _, v in chunks] == [1000, 1000, 500]
    again = full_catalog(2500, 50)
    assert np.array_equal(np.concatenate([v for _, v in chunks]), again)
    assert np.allclose(np.linalg.norm(again, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(again, full_catalog(2500, None))


def test_catalog_is_a_mixture_the_held_out_queries_share() -> None:
    vectors = full_catalog(2000, 50)
    same = vectors[0] @ vectors[50::50].T  # items 0, 50, 100, ... share cluster 0
    other = vectors[0] @ vectors[1::50].T
    assert same.mean() > other.mean() + 0.2
    queries = held_out_queries(100, 50)
    assert queries.shape == (100, 384)
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    assert (queries @ vectors.T).max(axis=1).min() > 0.3  # each query lies near some cluster of the catalog


def test_exact_top_matches_a_full_sort_across_chunks() -> None:
    vectors = full_catalog(2500, 50)
    queries = held_out_queries(20, 50)
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(exact_top(2500, 50, queries), expected)
    assert np.array_equal(exact_top(7, 50, queries, k=5), np.argsort(-(queries @ vectors[:7].T), axis=1)[:, :5])
