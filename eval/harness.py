"""Runs a protocol through the real code: indexer for the catalog, profile store for training, Recommender for reads."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval.als import GRID, AlsConfig, AlsModel, select_als
from eval.datasets import Dataset
from eval.metrics import KS, coverage, mean_rows, paired_difference, percentile, ranking_metrics
from eval.protocols import Split, split
from eval.strategies import Strategy, default_strategies, history_text
from indexer import search
from indexer.catalog import index_items
from indexer.clients import make_es, make_redis
from indexer.diversity import intra_list_diversity
from indexer.documents import validate_items
from indexer.encoder import get_encoder
from indexer.lifecycle import alias_name, ensure_indices
from indexer.profile import event_weight
from indexer.profile_store import AppliedEvent, ProfileStore, profile_from_events
from indexer.read_params import ReadParams
from indexer.recommender import Recommender
from indexer.settings import Settings

__all__ = ["EvalOptions", "Harness"]

log = logging.getLogger(__name__)
VECTOR_BATCH = 500
# Paired per-user NDCG@10 differences reported beside the table: the fusion question and what each hybrid
# adds over its parts.
PAIRS = (("hybrid-rrf", "hybrid-linear"), ("hybrid-rrf", "vector"), ("hybrid-rrf", "bm25"),
         ("hybrid-linear", "vector"), ("hybrid-linear", "bm25"))


@dataclass
class EvalOptions:
    target: str = "test"  # "valid" scores the validation items instead, for choosing weights honestly
    seed: int = 2020
    max_users: int | None = None
    strategies: list[Strategy] = field(default_factory=default_strategies)
    als_grid: Sequence[AlsConfig] = GRID
    ks: tuple[int, ...] = KS


class Harness:
    """One dataset, one index prefix: index the catalog once, then evaluate any number of protocols."""

    def __init__(self, settings: Settings, dataset: Dataset) -> None:
        oldest = min((i.ts for i in dataset.interactions), default=time.time())
        # Historical events must stay "seen" (the engine excludes them through the real seen set), and no
        # response may be cached between strategies or it would be timed as a cache hit.
        window_days = max(settings.seen_window_days, (time.time() - oldest) / 86400.0 + 30.0)
        self.settings = settings.model_copy(update={"reco_cache_ttl": 0, "seen_window_days": window_days})
        self.dataset = dataset
        self.es = make_es(self.settings, timeout=60)
        self.redis = make_redis(self.settings)
        self.engine = Recommender(self.settings, make_es(self.settings), self.redis,
                                  lambda: get_encoder(self.settings))
        self.store = ProfileStore(self.redis, self.settings)
        self.index = alias_name(self.settings, "items")
        self.titles = {str(item.get("id")): str(item.get("title", "")) for item in dataset.items}
        self.vectors: dict[str, np.ndarray] = {}
        self.indexing: list[dict[str, Any]] = []

    # -- catalog and profiles -----------------------------------------------------------------------------
    def index_catalog(self, popularity: Mapping[str, int]) -> dict[str, Any]:
        """Index every item with popularity = training count; embeds only on the first call of a run
        (later calls carry unchanged text, so the indexer reuses the stored vectors)."""
        ensure_indices(self.es, self.settings)
        version = time.time_ns() // 1_000_000  # newer than anything this prefix holds, so every write lands
        raw = [{**item, "popularity": float(popularity.get(str(item["id"]), 0)), "version": version}
               for item in self.dataset.items]
        items, errors = validate_items(raw, max_text_chars=self.settings.max_text_chars)
        if errors:
            raise ValueError(f"{len(errors)} invalid items, first: {errors[0].as_dict()}")
        started = time.perf_counter()
        # Equal scores are ordered by Lucene doc id, which depends on how periodic refreshes cut segments
        # and how they merged; without refreshes during the bulk, the whole catalog lands in one segment in
        # input order and a rerun breaks ties the same way.
        self.es.indices.put_settings(index=self.index, settings={"index": {"refresh_interval": "-1"}})
        try:
            result = index_items(self.es, self.settings, items, get_encoder(self.settings))
        finally:
            self.es.indices.put_settings(index=self.index, settings={"index": {"refresh_interval": None}})
        if result.failed:
            raise RuntimeError(f"{len(result.failed)} items failed to index, first: {result.failed[0]}")
        # Replaced documents keep counting in BM25's term statistics until a merge drops them: one segment
        # makes a later protocol's BM25 scores independent of the earlier ones.
        self.es.indices.refresh(index=self.index)
        self.es.indices.forcemerge(index=self.index, max_num_segments=1)
        self.es.indices.refresh(index=self.index)
        ids = [item.id for item in items]
        for start in range(0, len(ids), VECTOR_BATCH):
            self.vectors.update(search.item_vectors(self.es, self.index, ids[start:start + VECTOR_BATCH]))
        report = {"indexed": result.indexed, "embedded": result.embedded, "reused": result.reused,
                  "seconds": round(time.perf_counter() - started, 2)}
        self.indexing.append(report)
        return report

    def clear_state(self) -> int:
        """Delete every Redis key under this prefix (profiles, seen sets, history, trending, caches)."""
        keys = list(self.redis.scan_iter(match=f"{self.settings.index_prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            self.redis.delete(*keys[start:start + 1000])
        return len(keys)

    def load_profiles(self, data: Split) -> int:
        """Fold each user's training events into a profile with the real profile code, as a rebuild does."""
        self.clear_state()
        users = 0
        for user_id, events in data.train.items():
            if not events:
                continue
            applied = [AppliedEvent(e.item_id, event_weight(e.type), e.ts, None) for e in events]
            self.store.replace(user_id, profile_from_events(applied, self.vectors, self.store.half_life_s), applied)
            users += 1
        return users

    # -- one protocol ---------------------------------------------------------------------------------------
    def run_protocol(self, protocol: str, options: EvalOptions) -> dict[str, Any]:
        started = time.perf_counter()
        data = split(protocol, self.dataset.interactions, seed=options.seed)
        indexing = self.index_catalog(data.popularity())
        profiles = self.load_profiles(data)
        users = self._users(data, options)
        relevant = {u: set(data.test[u] if options.target == "test" else data.valid[u]) for u in users}
        # Scoring test, the validation items are history too (RecBole masks train + valid).
        extra = {u: tuple(data.valid[u]) if options.target == "test" else () for u in users}
        queries = {u: history_text([self.titles.get(i, "") for i in self.store.history(u)]) for u in users}
        k = max(options.ks)
        rows: dict[str, Any] = {}
        per_user: dict[str, list[dict[str, float]]] = {}
        als_info: dict[str, Any] | None = None
        for strategy in options.strategies:
            log.info("%s: %s over %d users", protocol, strategy.name, len(users))
            if strategy.kind == "als":
                model, grid = select_als(data, [str(i["id"]) for i in self.dataset.items], options.als_grid,
                                         options.seed)
                als_info = {"selected": model.config.as_dict(), "grid": grid, "users": len(model.user_ids)}
                recommend = self._als(model, data, extra, k)
            elif strategy.kind == "popularity":
                recommend = self._popularity(extra, k)
            else:
                recommend = self._engine(strategy, queries, extra, k)
            rows[strategy.name], per_user[strategy.name] = self._score(strategy, users, recommend, relevant,
                                                                       options.ks)
        key = f"ndcg@{min(options.ks)}"
        paired = {f"{a} - {b}": paired_difference([r[key] for r in per_user[a]], [r[key] for r in per_user[b]])
                  for a, b in PAIRS if a in per_user and b in per_user}
        return {"protocol": protocol, "target": options.target, "users": len(users), "profiles": profiles,
                "train_events": sum(len(v) for v in data.train.values()), "indexing": indexing, "als": als_info,
                "strategies": rows, "paired": {key: paired}, "seconds": round(time.perf_counter() - started, 1)}

    def _users(self, data: Split, options: EvalOptions) -> list[str]:
        wanted = data.test if options.target == "test" else data.valid
        users = sorted(u for u in data.train if data.train[u] and wanted.get(u))
        if options.max_users and len(users) > options.max_users:
            rng = np.random.default_rng(options.seed)
            users = sorted(rng.choice(users, size=options.max_users, replace=False).tolist())
        return users

    def _engine(self, strategy: Strategy, queries: Mapping[str, str], extra: Mapping[str, tuple[str, ...]],
                k: int) -> Callable[[str], list[str]]:
        def recommend(user_id: str) -> list[str]:
            q = queries[user_id] if strategy.history_query else None
            params = ReadParams(k=k, q=q, exclude=extra[user_id], exclude_seen=True, **strategy.params)
            return [hit["id"] for hit in self.engine.recommend(user_id, params)["items"]]
        return recommend

    def _popularity(self, extra: Mapping[str, tuple[str, ...]], k: int) -> Callable[[str], list[str]]:
        def recommend(user_id: str) -> list[str]:
            # Same exclusions as the engine: the real seen set plus the held-out validation items.
            filters = search.Filters(exclude_ids=tuple(dict.fromkeys(self.store.seen(user_id) + list(extra[user_id]))))
            return [hit.id for hit in search.popular_items(self.engine.es, self.index, filters, k)]
        return recommend

    @staticmethod
    def _als(model: AlsModel, data: Split, extra: Mapping[str, tuple[str, ...]], k: int) -> Callable[[str], list[str]]:
        def recommend(user_id: str) -> list[str]:
            return model.recommend(user_id, set(data.train_items(user_id)) | set(extra[user_id]), k)
        return recommend

    def _score(self, strategy: Strategy, users: Sequence[str], recommend: Callable[[str], list[str]],
               relevant: Mapping[str, set[str]], ks: Sequence[int]) -> tuple[dict[str, Any], list[dict[str, float]]]:
        if users:
            recommend(users[0])  # warm-up (connections, first-call allocations), not timed
        lists: dict[str, list[str]] = {}
        latencies: list[float] = []
        for user_id in users:
            started = time.perf_counter()
            lists[user_id] = recommend(user_id)
            latencies.append((time.perf_counter() - started) * 1000.0)
        per_user = [ranking_metrics(lists[u], relevant[u], ks) for u in users]
        small = min(ks)
        row = {
            "describe": strategy.describe(),
            "metrics": mean_rows(per_user),
            **{f"coverage@{kk}": coverage(lists.values(), len(self.dataset.items), kk) for kk in ks},
            f"diversity@{small}": float(np.mean([intra_list_diversity(lists[u][:small], self.vectors)
                                                 for u in users])) if users else 0.0,
            "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
                           "mean": float(np.mean(latencies)) if latencies else float("nan")},
            "short_lists": sum(1 for u in users if len(lists[u]) < max(ks)),
        }
        return row, per_user
