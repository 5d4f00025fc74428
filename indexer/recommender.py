"""The ranking engine: profile, query embedding, one msearch, fusion, MMR, popularity prior, explain.

It is handed its clients and knows nothing of HTTP or task queues: the API, the evaluation and the
benchmarks build it the same way.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from elasticsearch import ApiError, ConnectionTimeout, Elasticsearch
from elasticsearch import ConnectionError as ESConnectionError
from redis import Redis

from indexer import keys, queries, search
from indexer.cf_serving import ModelCache, ServingModel
from indexer.clients import reply_bytes
from indexer.diversity import mmr
from indexer.encoder import Encoder
from indexer.errors import BackendUnavailable, NotFound
from indexer.fusion import FUSION_DEPTH, FusedHit, Hit, apply_popularity_prior, fuse_linear, fuse_rrf
from indexer.lifecycle import alias_name
from indexer.profile import Profile, query_vector
from indexer.profile_store import ProfileStore
from indexer.read_params import ReadParams
from indexer.response_cache import Entry, ResponseCache
from indexer.server_fusion import rrf_retriever_body, search_rrf, server_rrf_available
from indexer.settings import Settings
from indexer.telemetry import timed

QVEC_CACHE_TTL_S = 24 * 3600
# Elasticsearch cannot answer: unreachable, too slow, or its shards unavailable (BackendUnavailable, e.g. an
# mget whose shards are recovering). Readers degrade on these; the events endpoint defers the profile update.
ES_DOWN = (ESConnectionError, ConnectionTimeout, BackendUnavailable)
NUM_CANDIDATES = 100
# The heaviest legal read (k=100, page=20: 2,000 results, with MMR and explain) is bounded: MMR re-ranks at
# most this many of the best fused candidates (the rest follow in fused order: diversity matters at the
# top), retrievers fetch no deeper than the result list or this pool, and vectors travel only for the pool
# and the page (inline in the msearch when the lists are this short, else one mget).
MMR_CANDIDATES = 300
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collaborative:
    """The serving model and this request's inputs to its two retrievers (empty: retriever off)."""

    model: ServingModel | None
    history: list[tuple[str, float]]
    recent: list[tuple[str, float]]
    user_factor: np.ndarray | None

    @property
    def active(self) -> bool:
        return self.model is not None and (bool(self.history or self.recent) or self.user_factor is not None)


def retrieval_depth(params: ReadParams, size: int) -> int:
    """How many hits each retriever fetches for a list of `size`: the list itself, with room for MMR to
    choose from (three times the list, at least 50, at most MMR_CANDIDATES), and for linear fusion a list
    as deep as the one its weights were chosen on."""
    if params.mmr_lambda is not None:
        return max(size, min(max(size * 3, 50), MMR_CANDIDATES))
    # Linear fusion weighs each list's scores: over a deeper list, as the weights were chosen on.
    return max(size, FUSION_DEPTH) if params.fusion == "linear" else size


@dataclass(frozen=True)
class Read:
    """What one request read from Redis in its one round trip."""

    profile: Profile | None
    seen: list[str]
    cache_key: str  # the cached answer's key, which `entry` was read from
    entry: Entry | None
    query_vector: object  # the query's cached vector (bytes), or None
    query_fetched: bool  # whether the round trip asked for it

    @property
    def version(self) -> int:
        return self.profile.version if self.profile else 0


def _model_tag(model: ServingModel | None) -> str:
    """The serving model's version as a cached entry records it ("" without one)."""
    return str(model.version) if model else ""


class Recommender:
    """Ranks items for a user, a query or an anchor item. `encoder` is called on first need (only
    requests with query text embed anything)."""

    def __init__(self, settings: Settings, es: Elasticsearch, redis: Redis, encoder: Callable[[], Encoder]) -> None:
        self.settings = settings
        self.es = es
        self.redis = redis
        self.encoder = encoder
        self.store = ProfileStore(redis, settings)
        self.cache = ResponseCache(redis, settings)
        self.models = ModelCache(es, settings)
        self.index = alias_name(settings, "items")
        self.catalog = search.CatalogSize(es, self.index, min(settings.es_timeout, 2.0))

    # -- query embedding, cached in Redis (shared by every API process) --------------------------------
    def _query_vector_key(self, text: str) -> str:
        return keys.key(self.settings.index_prefix, keys.QUERY_VECTOR, self.encoder().model_id,
                        hashlib.sha256(text.encode()).hexdigest())

    def embed_query(self, text: str, read: Read | None = None) -> np.ndarray:
        """The query's embedding: cached in Redis (read in the request's round trip, or here), else the
        encoder's, kept for every API process."""
        key = self._query_vector_key(text)
        raw = read.query_vector if read is not None and read.query_fetched else self.redis.get(key)
        if raw:
            return np.frombuffer(reply_bytes(raw), dtype=np.float32)
        vector: np.ndarray = self.encoder().encode([text])[0]
        self.redis.set(key, vector.astype("<f4").tobytes(), ex=QVEC_CACHE_TTL_S)
        return vector

    # -- recommendations ----------------------------------------------------------------------------------
    def _read(self, user_id: str | None, cache_key: str, query_key: str | None) -> Read:
        """Everything the request needs from Redis in one round trip: the profile, the seen set, the
        cached answer and the query's cached vector. The entry is compared with the profile read here."""
        with timed("redis", "load_profile"), self.redis.pipeline(transaction=False) as pipe:
            if user_id:
                self.store.queue_load(pipe, user_id)
            with_entry = self.cache.queue_get(pipe, cache_key)
            if query_key:
                pipe.get(query_key)
            replies = pipe.execute()
        profile, seen = self.store.loaded(replies[0], replies[1]) if user_id else (None, [])
        rest = replies[2:] if user_id else replies
        entry = self.cache.entry(rest.pop(0)) if with_entry else None
        return Read(profile, seen, cache_key, entry, rest[0] if query_key else None, query_key is not None)

    def recommend(self, user_id: str | None, params: ReadParams, *, anchor_vector: np.ndarray | None = None,
                  anchor_id: str | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        cache_key = self.cache.key(user_id, params, anchor_id)
        query_key = self._query_vector_key(params.q) if params.q and params.w_query > 0 else None
        read = self._read(user_id, cache_key, query_key)
        serving = self._serving_model() if user_id else None
        if self.cache.ttl:
            cached = self.cache.hit(read.entry, read.version, _model_tag(serving))
            if cached:
                return cached
        return self._compute(user_id, params, read, serving, anchor_vector, anchor_id, started)

    def prefetch(self, user_id: str) -> bool:
        """Compute the user's default list and cache it under the profile version read now, unless it is
        cached already (or the user has no profile, or caching is off). True when a list was stored."""
        if not self.cache.ttl:
            return False
        started = time.perf_counter()
        params = ReadParams()
        cache_key = self.cache.key(user_id, params, None)
        read = self._read(user_id, cache_key, None)
        serving = self._serving_model()
        if read.profile is None or (read.entry is not None and read.entry.serves(read.version, _model_tag(serving))):
            return False
        return not self._compute(user_id, params, read, serving, None, None, started)["degraded"]

    def _compute(self, user_id: str | None, params: ReadParams, read: Read, serving: ServingModel | None,
                 anchor_vector: np.ndarray | None, anchor_id: str | None, started: float) -> dict[str, Any]:
        """The list itself (the cache missed): retriever inputs, one msearch, fusion; cached on the way out."""
        profile, seen, version = read.profile, read.seen, read.version
        last_good_key = self.cache.last_good_key(user_id, params, anchor_id)
        model = serving
        history = profile.interactions if profile else ()
        if model is not None and not model.knows_any(history):
            # The model knows none of the user's items (or there are none): its learned weights assume
            # collaborative lists that cannot exist here, so the model-free defaults apply.
            model = None
        params = params.resolved(model.defaults() if model else None)

        exclude: tuple[str, ...] = (anchor_id,) if anchor_id else ()
        if user_id and params.exclude_seen:
            exclude += tuple(seen)
            # Liked and bought items (settings.seen_forever_types) stay out for good, not only in the window.
            threshold = self.settings.forever_min_weight
            if threshold is not None:
                exclude += tuple(e.item_id for e in history if e.weight >= threshold)
        filters = params.filters(exclude)
        # A source whose weight is 0 is switched off: it is neither embedded nor searched.
        user_vec = query_vector(profile, now=time.time()) if profile and params.w_user else None
        if params.w_query > 0:
            q_vec = self.embed_query(params.q, read) if params.q else anchor_vector
        else:
            q_vec = None
        collaborative = Collaborative(
            model,
            model.history_weights(history) if model and params.w_item else [],
            model.history_weights(history, recent=True) if model and params.w_recent else [],
            model.user_factor(history) if model and params.w_cf else None,
        )
        size = params.k * params.page
        try:
            if user_vec is None and q_vec is None and not (params.q and params.w_bm25 > 0) \
                    and not collaborative.active:
                body = self._cold_start(filters, params, size)
            else:
                body = self._hybrid(params, filters, size, user_id, user_vec, q_vec, collaborative)
        except ES_DOWN:
            return self._degraded(last_good_key, filters, params, user_id, version, started)
        except ApiError as exc:
            if exc.status_code < 500:
                raise
            return self._degraded(last_good_key, filters, params, user_id, version, started)
        body.update(user_id=user_id, profile_version=version, model_version=model.version if model else None,
                    cached=False, degraded=False, took_ms=round((time.perf_counter() - started) * 1000, 2))
        self.cache.put(read.cache_key, last_good_key, version, _model_tag(serving), body)
        return body

    def _serving_model(self) -> ServingModel | None:
        """The serving collaborative model; None when there is none or the registry cannot be read (the
        content retrievers still answer, and an unreachable cluster degrades below)."""
        try:
            return self.models.serving()
        except (*ES_DOWN, ApiError, NotFound) as exc:
            log.warning("collaborative model unavailable, serving without it: %s", exc)
            return None

    def _degraded(self, last_good_key: str, filters: search.Filters, params: ReadParams, user_id: str | None,
                  version: int, started: float) -> dict[str, Any]:
        """Elasticsearch is unavailable: the last good answer for this request if there is one, else
        trending from Redis (ids and scores only). Always flagged degraded; never an error."""
        body = self.cache.last_good(last_good_key)
        if body:
            body.update(cached=True, degraded=True, took_ms=round((time.perf_counter() - started) * 1000, 2))
            return body
        # Without Elasticsearch a filter cannot be checked: return nothing rather than items that break it.
        trending = [] if filters.constrains_items \
            else self.store.trending(params.k * params.page, exclude=filters.exclude_ids)
        page = trending[(params.page - 1) * params.k: params.page * params.k]
        return {"items": [{"id": item_id, "score": score} for item_id, score in page], "strategy": "trending",
                "cold_start": True, "degraded": True, "cached": False, "user_id": user_id,
                "profile_version": version, "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    def _hybrid(self, params: ReadParams, filters: search.Filters, size: int, user_id: str | None,
                user_vec: np.ndarray | None, q_vec: np.ndarray | None, cf: Collaborative) -> dict[str, Any]:
        text = params.q if params.w_bm25 > 0 else None
        if not cf.active and self._server_side(params, text, user_vec, q_vec):
            return self._hybrid_server(params, filters, size, text, user_vec, q_vec)
        inline_vectors = (params.mmr_lambda is not None or params.explain) \
            and retrieval_depth(params, size) <= MMR_CANDIDATES
        searches = self._searches(params, filters, size, text, user_vec, q_vec, cf, inline_vectors)
        with timed("elasticsearch", "msearch"):
            retrieval = search.msearch(self.es, self.index, searches)
        if cf.model is not None:
            for name, history in (("item_item", cf.history), ("item_recent", cf.recent)):
                if name in retrieval.rankings:
                    retrieval.rankings[name] = cf.model.rescore(retrieval.rankings[name], history)
        weights = {name: w for name, w in params.weights().items() if name in retrieval.rankings}
        if params.fusion == "rrf":
            fused = fuse_rrf(retrieval.rankings, k=params.rrf_k, weights=weights)
        else:
            fused = fuse_linear(retrieval.rankings, weights=weights, normalization=params.normalization)
        if params.popularity_weight:
            popularity = {i: float(src.get("popularity") or 0) for i, src in retrieval.items.items()}
            fused = apply_popularity_prior(fused, popularity, params.popularity_weight)
        if params.mmr_lambda is not None:
            pool = fused[:MMR_CANDIDATES]
            self._fetch_vectors(retrieval, [h.id for h in pool])
            order = mmr([h.id for h in pool], {h.id: h.score for h in pool}, retrieval.vectors,
                        lambda_=params.mmr_lambda, k=min(size, len(pool)))
            by_id = {h.id: h for h in pool}
            fused = [by_id[i] for i in order] + fused[len(pool):size]
        page = fused[(params.page - 1) * params.k: params.page * params.k]
        if params.explain and user_id:
            self._fetch_vectors(retrieval, [h.id for h in page])
        because = self._because(user_id, page, retrieval.vectors, cf) if params.explain and user_id else {}
        items = [self._render(h, retrieval.items.get(h.id, {}), params.explain, because.get(h.id)) for h in page]
        return {"items": items, "strategy": params.fusion, "fusion_side": "app", "cold_start": False,
                "es_took_ms": retrieval.took_ms,
                "retrievers": sorted(retrieval.rankings)}

    def _fetch_vectors(self, retrieval: search.Retrieval, ids: list[str]) -> None:
        """Vectors the msearch did not bring (deep lists travel without them): one bounded mget."""
        missing = [i for i in ids if i not in retrieval.vectors]
        if missing:
            with timed("elasticsearch", "mget_vectors"):
                retrieval.vectors.update(search.item_vectors(self.es, self.index, missing))

    def _searches(self, params: ReadParams, filters: search.Filters, size: int, text: str | None,
                  user_vec: np.ndarray | None, q_vec: np.ndarray | None, cf: Collaborative,
                  with_vectors: bool) -> list[tuple[str, dict[str, Any]]]:
        """One search body per active retriever, every filter inside each (indexer.queries)."""
        depth = retrieval_depth(params, size)
        out: list[tuple[str, dict[str, Any]]] = []
        if text:
            out.append(("bm25", queries.search_body(depth, with_vectors, query=queries.bm25_query(text, filters))))
        candidates, oversample = search.knn_settings(self.settings, self.catalog.get) \
            if user_vec is not None or q_vec is not None else (0, None)
        for name, vector in (("user_knn", user_vec), ("query_knn", q_vec)):
            if vector is not None:
                knn = queries.knn_clause(vector, filters, depth, candidates, oversample=oversample)
                out.append((name, queries.search_body(depth, with_vectors, knn=knn)))
        if cf.model is not None:
            for name, history in (("item_item", cf.history), ("item_recent", cf.recent)):
                if history:
                    body = queries.item_item_query(cf.model.neighbours_field, history, filters)
                    out.append((name, queries.search_body(depth, with_vectors, query=body)))
        if cf.model is not None and cf.user_factor is not None:
            knn = queries.knn_clause(cf.user_factor, filters, depth, NUM_CANDIDATES, field=cf.model.factors_field)
            out.append(("cf_knn", queries.search_body(depth, with_vectors, knn=knn)))
        return out

    def _server_side(self, params: ReadParams, text: str | None, user_vec: np.ndarray | None,
                     q_vec: np.ndarray | None) -> bool:
        """Plain RRF (no explain, MMR or prior; weights 1) over 2+ retrievers can run on the cluster,
        where it has the rrf retriever; everything else needs the per-retriever rankings here."""
        active = [w for w, on in ((params.w_bm25, text), (params.w_user, user_vec), (params.w_query, q_vec))
                  if on is not None]
        plain = (params.fusion == "rrf" and not params.explain and params.mmr_lambda is None
                 and params.popularity_weight == 0 and len(active) >= 2 and all(w == 1.0 for w in active))
        return plain and self.settings.server_fusion == "auto" and server_rrf_available(self.es, self.index)

    def _hybrid_server(self, params: ReadParams, filters: search.Filters, size: int, text: str | None,
                       user_vec: np.ndarray | None, q_vec: np.ndarray | None) -> dict[str, Any]:
        candidates, oversample = search.knn_settings(self.settings, self.catalog.get)
        body = rrf_retriever_body(filters=filters, size=size, text=text, user_vector=user_vec, query_vector=q_vec,
                                  rank_constant=params.rrf_k, num_candidates=candidates, oversample=oversample)
        with timed("elasticsearch", "search_rrf"):
            hits, docs, took = search_rrf(self.es, self.index, body)
        page = hits[(params.page - 1) * params.k: params.page * params.k]
        items = [{"id": h.id, "score": h.score, **{k: v for k, v in docs.get(h.id, {}).items() if k != "id"}}
                 for h in page]
        return {"items": items, "strategy": "rrf", "fusion_side": "server", "cold_start": False,
                "es_took_ms": took}

    def _cold_start(self, filters: search.Filters, params: ReadParams, size: int) -> dict[str, Any]:
        """No profile and no query: trending (time-decayed event counts), topped up by catalog popularity."""
        trending = self.store.trending(size * 3 + 20, exclude=filters.exclude_ids)
        ids = search.filtered_ids(self.es, self.index, [i for i, _ in trending], filters)[:size]
        scores = dict(trending)
        hits = [Hit(i, scores[i]) for i in ids]
        if len(hits) < size:
            more = search.popular_items(self.es, self.index,
                                        replace(filters, exclude_ids=filters.exclude_ids + tuple(ids)),
                                        size - len(hits))
            hits.extend(more)
        page = hits[(params.page - 1) * params.k: params.page * params.k]
        docs = search.items_by_id(self.es, self.index, [h.id for h in page])
        items = []
        for rank, hit in enumerate(page, start=(params.page - 1) * params.k + 1):
            entry = {"id": hit.id, "score": hit.score, **{k: v for k, v in docs.get(hit.id, {}).items() if k != "id"}}
            if params.explain:
                entry["explain"] = {"source": "trending" if hit.id in scores else "popularity", "rank": rank}
            items.append(entry)
        return {"items": items, "strategy": "trending", "cold_start": True}

    def _because(self, user_id: str, page: list[FusedHit], vectors: dict[str, np.ndarray],
                 cf: Collaborative) -> dict[str, dict[str, Any]]:
        """For each hit, the history item behind it: "because you liked X". Where the item-item retriever
        pulled the hit in, the history item with the largest item-item contribution; otherwise the history
        item most similar to it in content."""
        out: dict[str, dict[str, Any]] = {}
        if cf.model is not None:
            for hit in page:
                for name, weighted in (("item_recent", cf.recent), ("item_item", cf.history)):
                    found = cf.model.because(hit.id, weighted) if name in hit.sources else None
                    if found:
                        out[hit.id] = {**found, "retriever": name}
                        break
        history = self.store.history(user_id)[:20]
        if not history:
            return out
        history_vectors = search.item_vectors(self.es, self.index, history)
        if not history_vectors:
            return out
        ids = list(history_vectors)
        matrix = np.stack([history_vectors[i] for i in ids])
        for hit in page:
            if hit.id in out:
                continue
            vector = vectors.get(hit.id)
            if vector is None:
                continue
            sims = matrix @ vector
            best = int(np.argmax(sims))
            out[hit.id] = {"item_id": ids[best], "similarity": round(float(sims[best]), 4), "retriever": "content"}
        return out

    @staticmethod
    def _render(hit: FusedHit, source: dict[str, Any], explain: bool, because: dict[str, Any] | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": hit.id, "score": hit.score,
                                 **{k: v for k, v in source.items() if k != "id"}}
        if explain:
            entry["explain"] = {
                "fused_score": hit.score,
                "sources": {name: {"rank": c.rank, "score": c.score, "normalized": c.normalized,
                                   "contribution": c.contribution} for name, c in hit.sources.items()},
                "because": because,
            }
        return entry

    def similar(self, item_id: str, params: ReadParams) -> dict[str, Any]:
        """Items like `item_id`. Elasticsearch unavailable, even for the anchor's own vector: degraded like
        recommendations (the last good answer for this item and parameters, else trending), never a 503,
        and never a 404 for an item whose shard merely did not answer."""
        started = time.perf_counter()
        try:
            vectors = search.item_vectors(self.es, self.index, [item_id])
        except ES_DOWN:
            return self._similar_degraded(item_id, params, started)
        except ApiError as exc:
            if exc.status_code < 500:
                raise
            return self._similar_degraded(item_id, params, started)
        if item_id not in vectors:
            raise NotFound(f"item {item_id!r} is not in the catalog (or has no vector yet)")
        return self.recommend(None, params, anchor_vector=vectors[item_id], anchor_id=item_id)

    def _similar_degraded(self, item_id: str, params: ReadParams, started: float) -> dict[str, Any]:
        # The keys and filters `recommend` uses for an anchor (no user, so no model): the same last good answer.
        resolved = params.resolved(None)
        last_good_key = self.cache.last_good_key(None, params, item_id)
        return self._degraded(last_good_key, resolved.filters((item_id,)), resolved, None, 0, started)
