"""Read-side Elasticsearch access: hybrid retrieval in one msearch round trip, item lookups, trending."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch

from indexer.errors import BackendUnavailable, NotFound
from indexer.fusion import Hit

TEXT_FIELDS = ["title^3", "description", "tags.text^2"]
DISPLAY_FIELDS = ["id", "title", "category", "tags", "price", "in_stock", "popularity", "created_at"]


@dataclass(frozen=True)
class Filters:
    """Constraints every hit must meet; applied inside each kNN search (pre-filter), not after it."""

    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool | None = None
    exclude_ids: tuple[str, ...] = ()

    @property
    def constrains_items(self) -> bool:
        """Whether a hit must meet a condition on its fields (beyond not being excluded)."""
        return bool(self.categories or self.tags) or self.in_stock is not None \
            or self.price_min is not None or self.price_max is not None

    def clause(self) -> dict[str, Any]:
        must: list[dict[str, Any]] = []
        if self.categories:
            must.append({"terms": {"category": list(self.categories)}})
        if self.tags:
            must.append({"terms": {"tags": list(self.tags)}})
        if self.price_min is not None or self.price_max is not None:
            bounds = {k: v for k, v in (("gte", self.price_min), ("lte", self.price_max)) if v is not None}
            must.append({"range": {"price": bounds}})
        if self.in_stock is not None:
            must.append({"term": {"in_stock": self.in_stock}})
        bool_query: dict[str, Any] = {"filter": must}
        if self.exclude_ids:
            bool_query["must_not"] = [{"ids": {"values": list(self.exclude_ids)}}]
        return {"bool": bool_query}


@dataclass
class Retrieval:
    rankings: dict[str, list[Hit]] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    took_ms: int = 0


def _knn(vector: np.ndarray, filters: Filters, k: int, num_candidates: int) -> dict[str, Any]:
    return {"field": "embedding", "query_vector": [float(x) for x in vector], "k": k,
            "num_candidates": max(num_candidates, k), "filter": filters.clause()}


def retrieve(es: Elasticsearch, index: str, *, filters: Filters, size: int, text: str | None = None,
             user_vector: np.ndarray | None = None, query_vector: np.ndarray | None = None,
             num_candidates: int = 100, with_vectors: bool = False, timeout: float | None = None) -> Retrieval:
    """Run BM25 (when text), kNN on the user vector and kNN on the query vector in one msearch.

    Each ranking comes back separately so the application can fuse them (RRF or linear) on any
    node, licensed or not.
    """
    source: dict[str, Any] = {"includes": DISPLAY_FIELDS + (["embedding"] if with_vectors else [])}
    searches: list[tuple[str, dict[str, Any]]] = []
    if text:
        searches.append(("bm25", {"size": size, "_source": source, "query": {"bool": {
            "must": [{"multi_match": {"query": text, "fields": TEXT_FIELDS, "type": "best_fields"}}],
            "filter": [filters.clause()]}}}))
    if user_vector is not None:
        searches.append(("user_knn", {"size": size, "_source": source,
                                      "knn": _knn(user_vector, filters, size, num_candidates)}))
    if query_vector is not None:
        searches.append(("query_knn", {"size": size, "_source": source,
                                       "knn": _knn(query_vector, filters, size, num_candidates)}))
    result = Retrieval()
    if not searches:
        return result
    body: list[dict[str, Any]] = []
    for _, search in searches:
        body.extend([{"index": index}, search])
    response = es.options(request_timeout=timeout).msearch(searches=body) if timeout else es.msearch(searches=body)
    result.took_ms = int(response.get("took", 0))
    for (name, _), answer in zip(searches, response["responses"]):
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


def item_vectors(es: Elasticsearch, index: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Stored embeddings of the given items (missing ids are left out)."""
    if not ids:
        return {}
    response = es.mget(index=index, ids=list(dict.fromkeys(ids)), source_includes=["embedding"])
    return {d["_id"]: np.asarray(d["_source"]["embedding"], dtype=np.float32)
            for d in response["docs"] if d.get("found") and d.get("_source", {}).get("embedding")}


def items_by_id(es: Elasticsearch, index: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    response = es.mget(index=index, ids=list(dict.fromkeys(ids)), source_includes=DISPLAY_FIELDS)
    return {d["_id"]: d["_source"] for d in response["docs"] if d.get("found")}


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
