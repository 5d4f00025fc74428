"""Read-side Elasticsearch access: hybrid retrieval in one msearch round trip, item lookups, trending."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from elasticsearch import ApiError, Elasticsearch, TransportError

from indexer.errors import BackendUnavailable, NotFound
from indexer.filters import Filters
from indexer.fusion import Hit
from indexer.queries import DISPLAY_FIELDS, bm25_query, knn_clause, search_body
from indexer.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["CatalogSize", "Filters", "Retrieval", "filtered_ids", "item_vectors", "items_by_id", "knn_settings",
           "msearch", "popular_items", "retrieve"]

# The content kNN's candidates and rescoring by catalog size (items in the index) where the settings leave
# them unset: the smallest measured to keep recall@10 >= 0.95 against exact search (bench/serving.py,
# bbq_hnsw, 384-d vectors of a 50-cluster mixture): 100 candidates at 10k items (1.0), 200 at 100k (0.97,
# 0.88 with 100), 400 rescored at 10x the list at 1M (0.977; 0.57 with 100, 0.917 with oversample 5). Between
# the measured sizes the larger setting applies from 1.5x the smaller size.
KNN_BY_CATALOG_SIZE: tuple[tuple[int, int, float | None], ...] = (
    (15_000, 100, None), (150_000, 200, None), (2**62, 400, 10.0))
CATALOG_SIZE_TTL_S = 60.0
CATALOG_SIZE_RETRY_S = 5.0


def knn_settings(settings: Settings, items: Callable[[], int]) -> tuple[int, float | None]:
    """(num_candidates, oversample) of the content kNN: each from the settings when set there, else from
    KNN_BY_CATALOG_SIZE for the catalog of `items()` items (asked only when a setting is left unset)."""
    if settings.knn_num_candidates is not None and settings.knn_oversample is not None:
        return settings.knn_num_candidates, settings.knn_oversample
    count = items()
    _, candidates, oversample = next(row for row in KNN_BY_CATALOG_SIZE if count < row[0])
    return (settings.knn_num_candidates if settings.knn_num_candidates is not None else candidates,
            settings.knn_oversample if settings.knn_oversample is not None else oversample)


class CatalogSize:
    """Per process: the items index's document count, re-read at most every CATALOG_SIZE_TTL_S seconds (one
    short count request a minute); a failed read keeps the count it had (0 before the first success) and is
    tried again after CATALOG_SIZE_RETRY_S."""

    def __init__(self, es: Elasticsearch, index: str, timeout: float) -> None:
        self.es, self.index, self.timeout = es, index, timeout
        self._read: tuple[float, int] | None = None  # (when the value expires, the count)
        self._lock = threading.Lock()

    def get(self) -> int:
        read = self._read
        if read is not None and time.monotonic() < read[0]:
            return read[1]
        with self._lock:
            read, now = self._read, time.monotonic()
            if read is not None and now < read[0]:
                return read[1]
            try:
                count = int(self.es.options(request_timeout=self.timeout).count(index=self.index)["count"])
                self._read = (now + CATALOG_SIZE_TTL_S, count)
            except (ApiError, TransportError) as exc:
                log.warning("items count not read (the kNN keeps its last settings): %s", exc)
                count = read[1] if read is not None else 0
                self._read = (now + CATALOG_SIZE_RETRY_S, count)
            return count


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
