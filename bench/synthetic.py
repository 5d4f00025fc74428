"""Synthetic data shared by the benchmarks: a catalog written into the items index, and user events with
clustered tastes and long-tail popularity written into the events index through the project's own event
code (indexer.events.event_document / record_events). Not a benchmark; imported by bench/serving.py and
bench/training.py.

Taste model: item i belongs to cluster i % clusters (its embedding, when the catalog is clustered, lies
near that cluster's centroid). Each user likes two clusters; an event picks one of them with probability
`taste`, else any cluster; within the cluster an item is drawn by a Zipf popularity over a random rank
permutation (a long tail). User activity is log-normal (a few heavy users). Event types follow fixed
shares (mostly views), timestamps are uniform over the last `days` days.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch, helpers

from indexer import lifecycle
from indexer.events import Event, event_document, record_events
from indexer.settings import Settings

__all__ = ["CATEGORIES", "WORDS", "SyntheticEvents", "catalog_vectors", "drop_indices", "exact_top", "generate",
           "held_out_queries", "item_id", "load_catalog", "write_events"]

WORDS = ("space rocket garden kitchen pasta football river mountain jazz guitar winter summer robot ocean "
         "forest castle dragon detective comedy thriller romance history science travel").split()
CATEGORIES = ["books", "films", "music", "games", "sports"]
EVENT_TYPES = ("view", "click", "cart", "like", "purchase", "dislike")
TYPE_SHARES = (0.55, 0.22, 0.08, 0.07, 0.05, 0.03)


def item_id(i: int) -> str:
    return f"s{i}"


def drop_indices(es: Elasticsearch, prefix: str) -> list[str]:
    """Delete every index of this (bench) prefix."""
    assert prefix.startswith("hrbench-"), prefix
    names = list(es.indices.get(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True).body)
    if names:
        es.indices.delete(index=names)
    return names


def catalog_vectors(n: int, clusters: int | None, seed: int = 1,
                    chunk: int = 1000) -> Iterator[tuple[int, np.ndarray]]:
    """(start, float32 vectors) chunks of the n catalog vectors, the same on every call for the same
    arguments: random normalised 384-d vectors, or near the item's cluster centroid (item i in cluster
    i % clusters) when `clusters` is given. Rounded to 6 decimals, the precision the bulk body carries,
    so an exact search over these arrays sees what Elasticsearch stored."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(clusters, 384)) / np.sqrt(384) if clusters else None
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        vectors = rng.normal(size=(count, 384)).astype(np.float32)
        if centroids is not None:
            vectors = vectors / np.sqrt(384) + centroids[np.arange(start, start + count) % len(centroids)]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        yield start, vectors.round(6).astype(np.float32)


def held_out_queries(n: int, clusters: int, seed: int = 1, query_seed: int = 11) -> np.ndarray:
    """n fresh points of the catalog's mixture (the same centroids, new noise): kNN recall queries."""
    centroids = np.random.default_rng(seed).normal(size=(clusters, 384)) / np.sqrt(384)
    rng = np.random.default_rng(query_seed)
    points = rng.normal(size=(n, 384)) / np.sqrt(384) + centroids[rng.integers(0, clusters, size=n)]
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def exact_top(n: int, clusters: int | None, queries: np.ndarray, k: int = 10, seed: int = 1) -> np.ndarray:
    """Brute force over catalog_vectors(n, clusters, seed), chunk by chunk: the k best item numbers per
    query by dot product (the items index's similarity), best first."""
    best = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start, vectors in catalog_vectors(n, clusters, seed):
        scores = np.concatenate([best, queries @ vectors.T], axis=1)
        numbers = np.concatenate([ids, np.broadcast_to(np.arange(start, start + len(vectors)),
                                                       (len(queries), len(vectors)))], axis=1)
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        best, ids = np.take_along_axis(scores, top, axis=1), np.take_along_axis(numbers, top, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(ids, order, axis=1)


def load_catalog(es: Elasticsearch, settings: Settings, n: int, *, clusters: int | None = None,
                 forcemerge: bool = True, seed: int = 1, threads: int = 2) -> dict[str, Any]:
    """A fresh set of indices for the prefix and n items with the catalog_vectors, bulked on `threads`
    threads (elasticsearch.helpers.parallel_bulk) with refresh off and no replica during the load, both
    restored after it. Returns the seconds of the load (bulk + refresh) and of the force-merge."""
    drop_indices(es, settings.index_prefix)
    index = lifecycle.ensure_indices(es, settings)["items"]
    keep = ("refresh_interval", "number_of_replicas", "auto_expand_replicas")
    current = es.indices.get_settings(index=index, name=[f"index.{k}" for k in keep],
                                      include_defaults=True)[index]
    before = {k: {**current.get("defaults", {}).get("index", {}), **current["settings"]["index"]}.get(k)
              for k in keep}
    es.indices.put_settings(index=index, settings={"index": {"refresh_interval": "-1", "number_of_replicas": 0,
                                                             "auto_expand_replicas": False}})

    def docs() -> Iterator[dict[str, Any]]:
        for start, vectors in catalog_vectors(n, clusters, seed):
            for offset, vector in enumerate(vectors.tolist()):
                i = start + offset
                words = [WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(4)]
                yield {"_index": index, "_id": item_id(i), "_source": {
                    "id": item_id(i), "title": " ".join(words), "description": f"item {i} about {words[0]}",
                    "category": CATEGORIES[i % len(CATEGORIES)], "tags": words[:2], "price": float(i % 200),
                    "in_stock": i % 10 != 0, "popularity": float(i % 1000),
                    "embedding": vector, "embedding_model": "synthetic", "text_hash": "synthetic"}}

    began = time.perf_counter()
    for ok, info in helpers.parallel_bulk(es.options(request_timeout=300), docs(), thread_count=threads,
                                          chunk_size=500, queue_size=threads * 2):
        if not ok:
            raise RuntimeError(f"bulk failed: {info}")
    es.options(request_timeout=900).indices.refresh(index=index)
    report: dict[str, Any] = {"items": n, "index_s": round(time.perf_counter() - began, 1), "bulk_threads": threads,
                              "forcemerge": forcemerge}
    report["items_per_s"] = round(n / report["index_s"], 1) if report["index_s"] else None
    es.indices.put_settings(index=index, settings={"index": before})
    if forcemerge:
        began = time.perf_counter()
        es.options(request_timeout=3600).indices.forcemerge(index=index, max_num_segments=1)
        report["forcemerge_s"] = round(time.perf_counter() - began, 1)
    return report


@dataclass(frozen=True)
class SyntheticEvents:
    """Events sorted by (user, ts): user index, item index, event type index (EVENT_TYPES), epoch ts."""

    users: np.ndarray
    items: np.ndarray
    types: np.ndarray
    ts: np.ndarray
    n_users: int
    n_items: int

    def __len__(self) -> int:
        return len(self.users)

    def of_user(self, user: int) -> slice:
        start, stop = np.searchsorted(self.users, [user, user + 1])
        return slice(int(start), int(stop))

    def per_user(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.n_users)

    def summary(self) -> dict[str, Any]:
        per_user = self.per_user()
        per_item = np.bincount(self.items, minlength=self.n_items)
        active = per_user[per_user > 0]
        return {"events": len(self), "users": int(active.size), "items_with_events": int((per_item > 0).sum()),
                "events_per_user_p50": float(np.median(active)), "events_per_user_max": int(active.max()),
                "top_item_share": round(float(per_item.max() / len(self)), 5),
                "type_counts": {t: int((self.types == k).sum()) for k, t in enumerate(EVENT_TYPES)}}


def generate(n_events: int, n_items: int, *, n_users: int | None = None, clusters: int = 50, taste: float = 0.8,
             zipf: float = 0.9, days: float = 60.0, seed: int = 7, now: float | None = None) -> SyntheticEvents:
    """Events of the taste model in the module docstring (n_users defaults to one per 50 events)."""
    rng = np.random.default_rng(seed)
    n_users = n_users or max(20, n_events // 50)
    clusters = min(clusters, n_items)
    now = now if now is not None else time.time()
    activity = rng.lognormal(0.0, 1.0, size=n_users)
    users = rng.choice(n_users, size=n_events, p=activity / activity.sum())
    likes = rng.integers(0, clusters, size=(n_users, 2))
    own = likes[users, rng.integers(0, 2, size=n_events)]
    cluster = np.where(rng.random(n_events) < taste, own, rng.integers(0, clusters, size=n_events))
    weight = 1.0 / np.power(rng.permutation(n_items) + 1.0, zipf)
    items = np.empty(n_events, dtype=np.int64)
    for c in range(clusters):
        where = np.flatnonzero(cluster == c)
        members = np.arange(c, n_items, clusters)
        items[where] = rng.choice(members, size=where.size, p=weight[members] / weight[members].sum())
    types = rng.choice(len(EVENT_TYPES), size=n_events, p=TYPE_SHARES)
    ts = now - rng.uniform(60.0, days * 86400.0, size=n_events)
    order = np.lexsort((ts, users))
    return SyntheticEvents(users[order].astype(np.int32), items[order].astype(np.int32),
                           types[order].astype(np.int8), ts[order], n_users, n_items)


def event_docs(events: SyntheticEvents, start: int, stop: int) -> list[dict[str, Any]]:
    """Event documents as the API's event path produces them (validated Event -> event_document)."""
    out = []
    for n in range(start, stop):
        user, ts = int(events.users[n]), float(events.ts[n])
        event = Event(user_id=f"u{user}", item_id=item_id(int(events.items[n])),
                      type=EVENT_TYPES[events.types[n]],
                      ts=datetime.fromtimestamp(ts, UTC), session_id=f"u{user}-{int(ts // 86400)}",
                      event_id=f"syn-{n}")
        out.append(event_document(event))
    return out


def write_events(es: Elasticsearch, settings: Settings, events: SyntheticEvents,
                 batch: int = 20_000) -> dict[str, Any]:
    """Bulk the events into the prefix's events alias with indexer.events.record_events; then refresh."""
    started = time.perf_counter()
    ok = failed = 0
    for start in range(0, len(events), batch):
        report = record_events(es, settings, event_docs(events, start, min(len(events), start + batch)))
        ok += report.ok
        failed += len(report.failed)
    es.indices.refresh(index=lifecycle.alias_name(settings, "events"))
    seconds = time.perf_counter() - started
    return {"written": ok, "failed": failed, "seconds": round(seconds, 1),
            "events_per_s": round(ok / seconds, 1) if seconds else None}
