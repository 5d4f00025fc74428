"""The server-side RRF request: every retriever carries the filters, rank settings pass through."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.filters import Filters
from indexer.server_fusion import rrf_retriever_body


def test_body_has_each_retriever_with_filters_inside():
    filters = Filters(categories=("books",), exclude_ids=("seen-1",), price_max=20.0)
    body = rrf_retriever_body(filters=filters, size=10, text="space opera", user_vector=np.ones(3) / np.sqrt(3),
                              query_vector=np.array([1.0, 0.0, 0.0]), rank_constant=60)
    rrf = body["retriever"]["rrf"]
    assert rrf["rank_constant"] == 60 and rrf["rank_window_size"] == 10 and body["size"] == 10
    standard, user_knn, query_knn = rrf["retrievers"]
    bm25 = standard["standard"]["query"]["bool"]
    nested = filters.clause()["bool"]
    assert bm25["filter"] == nested["filter"] and bm25["must_not"] == nested["must_not"]
    assert standard["standard"]["query"]["bool"]["must"][0]["multi_match"]["query"] == "space opera"
    for knn in (user_knn["knn"], query_knn["knn"]):
        assert knn["filter"] == filters.clause() and knn["k"] == 10 and knn["num_candidates"] >= 10
    assert query_knn["knn"]["query_vector"] == [1.0, 0.0, 0.0]
    assert filters.clause()["bool"]["must_not"] == [{"ids": {"values": ["seen-1"]}}]


def test_one_retriever_is_not_a_fusion():
    with pytest.raises(ValueError):
        rrf_retriever_body(filters=Filters(), size=5, text=None, user_vector=np.ones(2), query_vector=None,
                           rank_constant=60)
