"""Read-side Elasticsearch access: hybrid retrieval in one msearch round trip, item lookups, trending."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch

from indexer.errors import BackendUnavailable, NotFound
from indexer.filters import Filters
from indexer.fusion import Hit
from indexer.queries import DISPLAY_FIELDS, bm25_query, knn_clause, search_body

__all__ = ["Filters", "Retrieval", "filtered_ids", "item_vectors", "items_by_id", "msearch", "popular_items",
           "retrieve"]

@dataclass
class Retrieval:
    rankings: dict[str, list[Hit]] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    took_ms: int = 0


def retrieve(es: Elasticsearch, index: str, *, filters: Filters, size: int, text: str | None = None,
             user_vector: np.ndarray | None = None, query_vector: np.ndarray | None = None,
             num_candidates: int = 100, with_vectors: bool = False, timeout: float | None = None,
             oversample: float | None = None) -> Retrieval:
    """The content retrievers in one msearch: BM25 (when text), kNN on the user vector, kNN on the query
    vector. Each ranking comes back separately so the application can fuse them on any node."""
    searches: list[tuple[str, dict[str, Any]]] = []
    if text:
        searches.append(("bm25", search_body(size, with_vectors, query=bm25_query(text, filters))))
    for name, vector in (("user_knn", user_vector), ("query_knn", query_vector)):
        if vector is not None:
            searches.append((name, search_body(size, with_vectors,
                                               knn=knn_clause(vector, filters, size, num_candidates,
                                                              oversample=oversample))))
    return msearch(es, index, searches, timeout=timeout)


def msearch(es: Elasticsearch, index: str, searches: Sequence[tuple[str, dict[str, Any]]],
            timeout: float | None = None) -> Retrieval:
    """Run named search bodies (indexer.queries) in one msearch round trip; one ranking per name."""
    result = Retrieval()
    if not searches:
        return result
    body: list[dict[str, Any]] = []
    for _, search in searches:
        body.extend([{"index": index}, search])
    response = es.options(request_timeout=timeout).msearch(searches=body) if timeout else es.msearch(searches=body)
    result.took_ms = int(response.get("took", 0))
    for (name, _), answer in zip(searches, response["responses"], strict=True):
        if "error" in answer:
            status = int(answer.get("status") or 500)
            reason = answer["error"].get("reason") if isinstance(answer["error"], dict) else answer["error"]
            if status == 404:
                raise NotFound(f"{index} does not exist yet: run `hybridrec init` or index items first")
            if status == 429 or status >= 500:
                raise BackendUnavailable(f"{name} search failed ({status}): {reason}")
            raise RuntimeError(f"{name} search was refused ({status}): {reason}")
        hits = answer["hits"]["hits"]
        result.rankings[name] = [Hit(h["_id"], float(h["_score"])) for h in hits]
        for h in hits:
            src = dict(h.get("_source", {}))
            vector = src.pop("embedding", None)
            if vector is not None:
                result.vectors[h["_id"]] = np.asarray(vector, dtype=np.float32)
            result.items.setdefault(h["_id"], src)
    return result


def _mget(es: Elasticsearch, index: str, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any]]:
    """The found documents of `ids`. A document whose shard did not answer (a node restarting, shards
    recovering) carries an `error`, not `found: false`: it is unavailable, never missing, so the whole
    lookup fails as BackendUnavailable (callers degrade or retry) instead of reporting a real item unknown."""
    response = es.mget(index=index, ids=list(dict.fromkeys(ids)), source_includes=list(fields))
    failed = [d for d in response["docs"] if "error" in d]
    if failed:
        error = failed[0]["error"]
        reason = error.get("type", error) if isinstance(error, dict) else error
        raise BackendUnavailable(f"{len(failed)} of {len(response['docs'])} documents of {index} unreadable "
                                 f"({reason})")
    return [d for d in response["docs"] if d.get("found")]


def item_vectors(es: Elasticsearch, index: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Stored embeddings of the given items (missing ids are left out; unreadable ones raise)."""
    if not ids:
        return {}
    return {d["_id"]: np.asarray(d["_source"]["embedding"], dtype=np.float32)
            for d in _mget(es, index, ids, ["embedding"]) if d.get("_source", {}).get("embedding")}


def items_by_id(es: Elasticsearch, index: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    return {d["_id"]: d["_source"] for d in _mget(es, index, ids, DISPLAY_FIELDS)}


def filtered_ids(es: Elasticsearch, index: str, ids: Sequence[str], filters: Filters) -> list[str]:
    """The subset of `ids` (in the given order) that meets the filters."""
    if not ids:
        return []
    query = {"bool": {"filter": [{"ids": {"values": list(ids)}}, filters.clause()]}}
    response = es.search(index=index, query=query, size=len(ids), source=False)
    keep = {h["_id"] for h in response["hits"]["hits"]}
    return [i for i in ids if i in keep]


def popular_items(es: Elasticsearch, index: str, filters: Filters, size: int) -> list[Hit]:
    """Catalog popularity order, the fallback when no events have made anything trend yet."""
    response = es.search(index=index, size=size, query=filters.clause(), source=False,
                         sort=[{"popularity": {"order": "desc", "missing": "_last"}}, {"id": "asc"}])
    return [Hit(h["_id"], float((h.get("sort") or [0])[0] or 0)) for h in response["hits"]["hits"]]
