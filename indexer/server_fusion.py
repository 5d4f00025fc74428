"""Server-side reciprocal rank fusion (Elasticsearch's `rrf` retriever), used only where the cluster has
it (it needs an Elastic licence); everywhere else the application fuses (indexer.fusion)."""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from elasticsearch import ApiError, Elasticsearch

from indexer.filters import Filters
from indexer.fusion import Hit
from indexer.queries import DISPLAY_FIELDS, bm25_query, knn_clause

PROBE_TTL_S = 600.0
_probe: dict[str, tuple[bool, float]] = {}
_lock = threading.Lock()


def rrf_retriever_body(*, filters: Filters, size: int, text: str | None, user_vector: np.ndarray | None,
                       query_vector: np.ndarray | None, rank_constant: int,
                       num_candidates: int = 100, oversample: float | None = None) -> dict[str, Any]:
    """One _search body fusing BM25 and the kNN retrievers on the server, every filter inside each."""
    retrievers: list[dict[str, Any]] = []
    if text:
        retrievers.append({"standard": {"query": bm25_query(text, filters)}})
    for vector in (user_vector, query_vector):
        if vector is not None:
            retrievers.append({"knn": knn_clause(vector, filters, size, num_candidates, oversample=oversample)})
    if len(retrievers) < 2:
        raise ValueError("server-side RRF needs at least two retrievers")
    return {"size": size, "track_total_hits": False, "_source": {"includes": DISPLAY_FIELDS},
            "retriever": {"rrf": {"retrievers": retrievers, "rank_window_size": size,
                                  "rank_constant": rank_constant}}}


def server_rrf_available(es: Elasticsearch, index: str) -> bool:
    """Whether this cluster accepts an `rrf` retriever, probed with a size-0 search and remembered for
    ten minutes (a licence can change). An unlicensed or core node answers 400/403."""
    now = time.monotonic()
    with _lock:
        known = _probe.get(index)
        if known and now - known[1] < PROBE_TTL_S:
            return known[0]
    probe = {"size": 0, "retriever": {"rrf": {"retrievers": [{"standard": {"query": {"match_none": {}}}},
                                                             {"standard": {"query": {"match_none": {}}}}]}}}
    try:
        es.search(index=index, body=probe)
        available = True
    except ApiError as exc:
        if exc.status_code not in (400, 403):
            raise  # the node is in trouble: do not cache a verdict
        available = False
    with _lock:
        _probe[index] = (available, now)
    return available


def search_rrf(es: Elasticsearch, index: str, body: dict[str, Any]) -> tuple[list[Hit], dict[str, dict[str, Any]], int]:
    response = es.search(index=index, body=body)
    hits = response["hits"]["hits"]
    return ([Hit(h["_id"], float(h["_score"] or 0.0)) for h in hits], {h["_id"]: h.get("_source", {}) for h in hits},
            int(response.get("took", 0)))
