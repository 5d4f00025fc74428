"""Request bodies for every retriever, built without IO: BM25, kNN on a vector field, and the item-item
query on a sparse_vector field. The msearch path (indexer.search) and the server-side RRF body
(indexer.server_fusion) share these clauses, and unit tests check them without a node."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from indexer.filters import Filters

__all__ = ["DISPLAY_FIELDS", "TEXT_FIELDS", "bm25_query", "item_item_query", "knn_clause", "search_body"]

TEXT_FIELDS = ["title^3", "description", "tags.text^2"]
DISPLAY_FIELDS = ["id", "title", "category", "tags", "price", "in_stock", "popularity", "created_at"]
EMBEDDING_FIELD = "embedding"


def bm25_query(text: str, filters: Filters) -> dict[str, Any]:
    return {"bool": {"must": [{"multi_match": {"query": text, "fields": TEXT_FIELDS, "type": "best_fields"}}],
                     **filters.bool_parts()}}


def knn_clause(vector: np.ndarray, filters: Filters, k: int, num_candidates: int,
               field: str = EMBEDDING_FIELD, oversample: float | None = None) -> dict[str, Any]:
    """A kNN search with every filter inside it (pre-filtering: k hits that all meet the filters); with
    `oversample`, a quantised field's oversample * k best are rescored on the raw vectors."""
    clause = {"field": field, "query_vector": [float(x) for x in vector], "k": k,
              "num_candidates": max(num_candidates, k), "filter": filters.clause()}
    if oversample is not None:
        clause["rescore_vector"] = {"oversample": oversample}
    return clause


def item_item_query(field: str, history: Sequence[tuple[str, float]], filters: Filters) -> dict[str, Any]:
    """Scores every item j by sum_i w_i * B[i, j] over the history items i: one `term` clause per history
    item on the item's sparse_vector of incoming weights, boosted by w_i (a term query on a sparse_vector
    field scores boost x stored weight), with every filter in the same bool query (Filters.bool_parts)."""
    should = [{"term": {field: {"value": token, "boost": float(weight)}}} for token, weight in history if weight > 0]
    return {"bool": {"should": should, "minimum_should_match": 1, **filters.bool_parts()}}


def search_body(size: int, with_vectors: bool, *, query: dict[str, Any] | None = None,
                knn: dict[str, Any] | None = None) -> dict[str, Any]:
    """One search of the msearch: the display fields (and the content vector for MMR and explain). No hit
    count: nothing reads it, and counting every match keeps Lucene from skipping the blocks that cannot
    reach the top (a long history's item-item disjunction matches a large share of the catalog)."""
    body: dict[str, Any] = {"size": size, "track_total_hits": False,
                            "_source": {"includes": DISPLAY_FIELDS + ([EMBEDDING_FIELD] if with_vectors else [])}}
    if query is not None:
        body["query"] = query
    if knn is not None:
        body["knn"] = knn
    return body
