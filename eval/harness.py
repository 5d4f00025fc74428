"""Runs a protocol through the real code: the indexer for the catalog, the events index and the training
code for the collaborative model, the profile store for histories, the Recommender for every list."""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from elasticsearch.helpers import scan

from eval.als import GRID, AlsConfig, AlsModel, select_als
from eval.datasets import Dataset, Interaction
from eval.ease import EaseReference, select_ease
from eval.metrics import KS, coverage, mean_rows, paired_difference, ranking_metrics
from eval.protocols import Split, choose_cold_items, cold_targets, hide_items, split
from eval.strategies import Strategy, default_strategies, history_text
from indexer import search
from indexer.catalog import index_items
from indexer.clients import make_es, make_redis
from indexer.diversity import intra_list_diversity
from indexer.documents import validate_items
from indexer.encoder import get_encoder
from indexer.events import record_events
from indexer.lifecycle import alias_name, drop_and_create, ensure_indices
from indexer.profile import event_weight
from indexer.profile_store import AppliedEvent, ProfileStore, profile_from_events
from indexer.promotion import promote
from indexer.read_params import ReadParams
from indexer.recommender import Recommender
from indexer.settings import Settings
from indexer.telemetry import percentile
from indexer.training import TrainOptions, train

__all__ = ["EvalOptions", "Harness"]

log = logging.getLogger(__name__)
VECTOR_BATCH = 500
# Paired per-user NDCG@10 differences reported beside the table: the fusion question and what each hybrid
# adds over its parts.
PAIRS = (("default", "item-item"), ("default", "latent"), ("default", "popularity"), ("default", "hybrid-rrf"),
         ("hybrid-rrf", "hybrid-linear"), ("hybrid-rrf", "vector"))
# The cold-item section's paired differences: does the default beat content-only and popularity there.
COLD_PAIRS = (("default", "vector"), ("default", "popularity"), ("latent", "vector"))


@dataclass
class EvalOptions:
    target: str = "test"  # "valid" scores the validation items instead, for choosing weights honestly
    seed: int = 2020
    max_users: int | None = None
    strategies: list[Strategy] = field(default_factory=default_strategies)
    als_grid: Sequence[AlsConfig] = GRID
    ks: tuple[int, ...] = KS
    # The cold-item experiment: hide every interaction of this seeded share of the items from everything
    # the system sees, then also score each strategy on those items alone (eval/README.md, "Cold items").
    cold_items: float = 0.0


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
        # A slow answer on a loaded machine must be waited for, not scored as a degraded fallback.
        self.engine = Recommender(self.settings, make_es(self.settings, timeout=60), self.redis,
                                  lambda: get_encoder(self.settings))
        self.store = ProfileStore(self.redis, self.settings)
        self.index = alias_name(self.settings, "items")
        self.titles = {str(item.get("id")): str(item.get("title", "")) for item in dataset.items}
        self.vectors: dict[str, np.ndarray] = {}
        self.model_version: int | None = None
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

    def load_profiles(self, history: Mapping[str, Sequence[Interaction]]) -> int:
        """Fold each user's history into a profile with the real profile code, as a rebuild does."""
        self.clear_state()
        users = 0
        for user_id, events in history.items():
            if not events:
                continue
            applied = [AppliedEvent(e.item_id, event_weight(e.type), e.ts, None) for e in events]
            self.store.replace(user_id, profile_from_events(applied, self.vectors, self.store.half_life_s), applied)
            users += 1
        return users

    def write_events(self, history: Mapping[str, Sequence[Interaction]]) -> int:
        """The history as event documents in the events index, the source the training task reads."""
        drop_and_create(self.es, self.settings, "events")
        docs = [{"event_id": f"{e.user_id}:{e.item_id}:{e.ts:.0f}:{e.type}", "user_id": e.user_id,
                 "item_id": e.item_id, "type": e.type, "weight": event_weight(e.type),
                 "ts": datetime.fromtimestamp(e.ts, tz=UTC).isoformat()}
                for events in history.values() for e in events]
        report = record_events(self.es, self.settings, docs)
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} events not written, first: {report.failed[0]}")
        self.es.indices.refresh(index=alias_name(self.settings, "events"))
        return report.ok

    def train_model(self) -> dict[str, Any]:
        """Train, gate and promote through the training code the `train` task runs."""
        drop_and_create(self.es, self.settings, "models")
        started = time.perf_counter()
        result = train(self.es, self.settings, TrainOptions(min_events=1),
                       promote=lambda version: promote(self.es, self.settings, version))
        if result.state != "serving":
            raise RuntimeError(f"the trained model was not promoted: {result.reason}")
        self.model_version = result.version
        self.engine.models.invalidate()
        self.es.indices.refresh(index=self.index)
        return {**result.as_dict(), "end_to_end_s": round(time.perf_counter() - started, 2)}

    # -- one protocol ---------------------------------------------------------------------------------------
    def run_protocol(self, protocol: str, options: EvalOptions) -> dict[str, Any]:
        started = time.perf_counter()
        data = split(protocol, self.dataset.interactions, seed=options.seed)
        cold = choose_cold_items(self.dataset.interactions, options.cold_items, options.seed)
        data = hide_items(data, cold)  # nothing below sees an event on a cold item
        history = {u: data.history(u, options.target) for u in data.train}
        popularity = Counter(item for events in history.values() for item in dict.fromkeys(e.item_id for e in events))
        indexing = self.index_catalog(popularity)
        profiles = self.load_profiles(history)
        written = self.write_events(history)
        model = self.train_model() if any(s.kind == "engine" for s in options.strategies) else None
        users = self._users(data, options)
        relevant = {u: set(data.test[u] if options.target == "test" else data.valid[u]) for u in users}
        seen = {u: list(dict.fromkeys(e.item_id for e in history[u])) for u in users}
        queries = {u: history_text([self.titles.get(i, "") for i in self.store.history(u)]) for u in users}
        k = max(options.ks)
        rows: dict[str, Any] = {}
        per_user: dict[str, list[dict[str, float]]] = {}
        lists: dict[str, dict[str, list[str]]] = {}
        references: dict[str, Any] = {}
        item_ids = [str(i["id"]) for i in self.dataset.items]
        for strategy in options.strategies:
            log.info("%s: %s over %d users", protocol, strategy.name, len(users))
            if strategy.kind == "als":
                als, grid = select_als(data, item_ids, options.als_grid, options.seed)
                if options.target == "test":  # chosen on validation, refitted on everything before test
                    als = AlsModel(Split(protocol, train=history), item_ids, als.config, options.seed)
                references["als"] = {"selected": als.config.as_dict(), "grid": grid}
                recommend = self._reference(als.recommend, seen, k)
            elif strategy.kind == "ease":
                train_items = {u: data.train_items(u) for u in data.train}
                lam, grid = select_ease(train_items, data.valid, item_ids)
                ease = EaseReference({u: list(seen_items) for u, seen_items in
                                      ((u, dict.fromkeys(e.item_id for e in history[u])) for u in history)},
                                     item_ids, lam)
                references["ease"] = {"lambda": lam, "grid": grid}
                recommend = self._reference(ease.recommend, seen, k)
            elif strategy.kind == "popularity":
                recommend = self._popularity(seen, k)
            else:
                recommend = self._engine(strategy, queries, k)
            rows[strategy.name], per_user[strategy.name], lists[strategy.name] = self._score(
                strategy, users, recommend, relevant, options.ks)
        key = f"ndcg@{min(options.ks)}"
        paired = {f"{a} - {b}": paired_difference([r[key] for r in per_user[a]], [r[key] for r in per_user[b]])
                  for a, b in PAIRS if a in per_user and b in per_user}
        out = {"protocol": protocol, "target": options.target, "users": len(users), "profiles": profiles,
               "history_events": written, "indexing": indexing, "model": model, "references": references,
               "strategies": rows, "paired": {key: paired}}
        if cold:
            out["cold_items"] = self._cold_report(cold, options, relevant, lists)
        out["seconds"] = round(time.perf_counter() - started, 1)
        return out

    def _cold_report(self, cold: set[str], options: EvalOptions, relevant: Mapping[str, set[str]],
                     lists: Mapping[str, Mapping[str, list[str]]]) -> dict[str, Any]:
        """Every strategy scored on the cold items alone (relevant = a user's target items that are cold;
        users with none are skipped), how often its top 10 shows any cold item, and what the serving
        slot holds for the cold items (their mapped factors) against the warm ones."""
        targets = cold_targets(relevant, cold)
        users = sorted(targets)
        small = min(options.ks)
        strategies: dict[str, Any] = {}
        per_user: dict[str, list[dict[str, float]]] = {}
        for name, by_user in lists.items():
            per_user[name] = [ranking_metrics(by_user[u], targets[u], options.ks) for u in users]
            shown = [i for u in by_user for i in by_user[u][:small] if i in cold]
            strategies[name] = {"metrics": mean_rows(per_user[name]),
                                f"cold_share@{small}":
                                    len(shown) / max(1, sum(len(v[:small]) for v in by_user.values())),
                                f"cold_coverage@{small}": len(set(shown)) / len(cold)}
        paired = {f"{a} - {b}": {metric: paired_difference([r[metric] for r in per_user[a]],
                                                           [r[metric] for r in per_user[b]])
                                 for metric in (f"recall@{small}", f"ndcg@{small}")}
                  for a, b in COLD_PAIRS if a in per_user and b in per_user}
        return {"fraction": options.cold_items, "seed": options.seed, "items": len(cold), "users": len(users),
                "targets": sum(len(t) for t in targets.values()), "strategies": strategies, "paired": paired,
                "factors": self._factor_norms(cold) if self.model_version is not None else None}

    def _factor_norms(self, cold: set[str]) -> dict[str, Any]:
        """From Elasticsearch: how many cold and warm items carry a factor vector and item-item weights in
        the serving slot, and the vectors' norms (max_inner_product ranks by u . v: a norm is a boost)."""
        model = self.engine.models.serving()
        if model is None:
            return {}
        norms: dict[bool, list[float]] = {True: [], False: []}
        missing = {True: 0, False: 0}
        with_neighbours = {True: 0, False: 0}
        for hit in scan(self.es, index=self.index, query={"query": {"match_all": {}}}, size=1000,
                        source_includes=[model.factors_field, model.neighbours_field]):
            vector = (hit.get("_source") or {}).get(model.factors_field)
            is_cold = hit["_id"] in cold
            with_neighbours[is_cold] += bool((hit.get("_source") or {}).get(model.neighbours_field))
            if vector:
                norms[is_cold].append(float(np.linalg.norm(vector)))
            else:
                missing[is_cold] += 1
        def summary(values: list[float]) -> dict[str, float]:
            return {"mean": float(np.mean(values)) if values else float("nan"),
                    "p50": percentile(values, 50), "p90": percentile(values, 90)}
        return {"slot_field": model.factors_field, "cold_with_factors": len(norms[True]),
                "cold_without_factors": missing[True], "warm_with_factors": len(norms[False]),
                "warm_without_factors": missing[False], "cold_with_neighbours": with_neighbours[True],
                "warm_with_neighbours": with_neighbours[False], "cold_norm": summary(norms[True]),
                "warm_norm": summary(norms[False])}

    def _users(self, data: Split, options: EvalOptions) -> list[str]:
        wanted = data.test if options.target == "test" else data.valid
        users = sorted(u for u in data.train if data.train[u] and wanted.get(u))
        if options.max_users and len(users) > options.max_users:
            rng = np.random.default_rng(options.seed)
            users = sorted(rng.choice(users, size=options.max_users, replace=False).tolist())
        return users

    def _engine(self, strategy: Strategy, queries: Mapping[str, str], k: int) -> Callable[[str], list[str]]:
        def recommend(user_id: str) -> list[str]:
            q = queries[user_id] if strategy.history_query else None
            params = ReadParams(k=k, q=q, exclude_seen=True, **strategy.params)
            body = self.engine.recommend(user_id, params)
            if body["degraded"]:
                raise RuntimeError(f"{strategy.name}: Elasticsearch did not answer for user {user_id}; a degraded "
                                   f"fallback list would be scored as the strategy's")
            if self.model_version is not None and body.get("model_version") != self.model_version:
                raise RuntimeError(f"{strategy.name}: user {user_id} was served by model "
                                   f"{body.get('model_version')}, not the trained {self.model_version}")
            return [hit["id"] for hit in body["items"]]
        return recommend

    def _popularity(self, seen: Mapping[str, list[str]], k: int) -> Callable[[str], list[str]]:
        def recommend(user_id: str) -> list[str]:
            # Same exclusions as the engine: the user's history (the real seen set holds the same items).
            filters = search.Filters(exclude_ids=tuple(seen[user_id]))
            return [hit.id for hit in search.popular_items(self.engine.es, self.index, filters, k)]
        return recommend

    @staticmethod
    def _reference(model: Callable[[str, Collection[str], int], list[str]], seen: Mapping[str, list[str]],
                   k: int) -> Callable[[str], list[str]]:
        def recommend(user_id: str) -> list[str]:
            return model(user_id, set(seen[user_id]), k)
        return recommend

    def _score(self, strategy: Strategy, users: Sequence[str], recommend: Callable[[str], list[str]],
               relevant: Mapping[str, set[str]], ks: Sequence[int]
               ) -> tuple[dict[str, Any], list[dict[str, float]], dict[str, list[str]]]:
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
        return row, per_user, lists
