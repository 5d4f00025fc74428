"""The read path: profile, query embedding, one msearch, fusion, MMR, popularity prior, explain, caching."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from typing import Any

import numpy as np
from elasticsearch import ApiError
from elasticsearch import ConnectionError as ESConnectionError
from elasticsearch import ConnectionTimeout

from api.observability import CACHE, timed
from api.params import ReadParams
from api.services import Services
from indexer import search
from indexer.diversity import mmr
from indexer.errors import BackendUnavailable, NotFound
from indexer.fusion import FusedHit, Hit, apply_popularity_prior, fuse_linear, fuse_rrf
from indexer.lifecycle import alias_name
from indexer.profile import query_vector
from indexer.profile_store import ProfileStore
from indexer.server_fusion import rrf_retriever_body, search_rrf, server_rrf_available

# A cold-start answer is trending items, which move with everyone's events and no profile version
# tracks them: keep it only briefly.
COLD_CACHE_TTL_S = 10
QVEC_CACHE_TTL_S = 24 * 3600
# The last good answer per user and parameters, served (flagged degraded) while Elasticsearch is down.
LAST_GOOD_TTL_S = 24 * 3600
ES_DOWN = (ESConnectionError, ConnectionTimeout)


class Engine:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.store = ProfileStore(svc.redis, svc.settings)
        self.index = alias_name(svc.settings, "items")

    # -- query embedding, cached in Redis (shared by every API process) --------------------------------
    def embed_query(self, text: str) -> np.ndarray:
        encoder = self.svc.encoder()
        key = f"{self.svc.settings.index_prefix}:qvec:{encoder.model_id}:{hashlib.sha256(text.encode()).hexdigest()}"
        raw = self.svc.redis.get(key)
        if raw:
            return np.frombuffer(raw, dtype=np.float32)
        vector = encoder.encode([text])[0]
        self.svc.redis.set(key, vector.astype("<f4").tobytes(), ex=QVEC_CACHE_TTL_S)
        return vector

    # -- recommendations ----------------------------------------------------------------------------------
    def recommend(self, user_id: str | None, params: ReadParams, *, anchor_vector: np.ndarray | None = None,
                  anchor_id: str | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        with timed("redis", "load_profile"):
            profile, seen = self.store.load_with_seen(user_id) if user_id else (None, [])
        version = profile.version if profile else 0
        cache_key = self._cache_key(user_id, version, params, anchor_id)
        ttl = self.svc.settings.reco_cache_ttl
        with timed("redis", "cache_get"):
            cached = self.svc.redis.get(cache_key) if ttl else None
        if ttl:
            CACHE.labels("hit" if cached else "miss").inc()
        if cached:
            body = json.loads(cached)
            body["cached"] = True
            return body

        exclude: tuple[str, ...] = (anchor_id,) if anchor_id else ()
        if user_id and params.exclude_seen:
            exclude += tuple(seen)
        filters = params.filters(exclude)
        # A source whose weight is 0 is switched off: it is neither embedded nor searched.
        user_vec = query_vector(profile, now=time.time()) if profile and params.w_user > 0 else None
        if params.w_query > 0:
            q_vec = self.embed_query(params.q) if params.q else anchor_vector
        else:
            q_vec = None
        size = params.k * params.page
        last_good_key = self._cache_key(user_id, None, params, anchor_id)
        try:
            if user_vec is None and q_vec is None and not (params.q and params.w_bm25 > 0):
                body = self._cold_start(filters, params, size)
            else:
                body = self._hybrid(params, filters, size, user_id, user_vec, q_vec)
        except (*ES_DOWN, BackendUnavailable):
            return self._degraded(last_good_key, filters, params, user_id, version, started)
        except ApiError as exc:
            if exc.status_code < 500:
                raise
            return self._degraded(last_good_key, filters, params, user_id, version, started)
        body.update(user_id=user_id, profile_version=version, cached=False, degraded=False,
                    took_ms=round((time.perf_counter() - started) * 1000, 2))
        if ttl:
            ttl = min(ttl, COLD_CACHE_TTL_S) if body["cold_start"] else ttl
            encoded = json.dumps(body)
            with self.svc.redis.pipeline(transaction=False) as pipe:
                pipe.set(cache_key, encoded, ex=ttl)
                pipe.set(last_good_key, encoded, ex=LAST_GOOD_TTL_S)
                pipe.execute()
        return body

    def _degraded(self, last_good_key: str, filters: search.Filters, params: ReadParams, user_id: str | None,
                  version: int, started: float) -> dict[str, Any]:
        """Elasticsearch is unavailable: the last good answer for this request if there is one, else
        trending from Redis (ids and scores only). Always flagged degraded; never an error."""
        cached = self.svc.redis.get(last_good_key)
        if cached:
            body = json.loads(cached)
            body.update(cached=True, degraded=True, took_ms=round((time.perf_counter() - started) * 1000, 2))
            return body
        # Without Elasticsearch a filter cannot be checked: return nothing rather than items that break it.
        trending = [] if filters.constrains_items else self.store.trending(params.k * params.page, exclude=filters.exclude_ids)
        page = trending[(params.page - 1) * params.k: params.page * params.k]
        return {"items": [{"id": item_id, "score": score} for item_id, score in page], "strategy": "trending",
                "cold_start": True, "degraded": True, "cached": False, "user_id": user_id,
                "profile_version": version, "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    def _cache_key(self, user_id: str | None, version: int | None, params: ReadParams, anchor: str | None) -> str:
        """Per profile version (an event invalidates it); version None: the version-less last good answer."""
        digest = hashlib.sha256(params.model_dump_json().encode() + (anchor or "").encode()).hexdigest()[:24]
        kind = "reco" if version is not None else "reco-last"
        return f"{self.svc.settings.index_prefix}:{kind}:{digest}:{version}:{user_id or '-'}"

    def _hybrid(self, params: ReadParams, filters: search.Filters, size: int, user_id: str | None,
                user_vec: np.ndarray | None, q_vec: np.ndarray | None) -> dict[str, Any]:
        want_vectors = params.mmr_lambda is not None or params.explain
        depth = max(size * 3, 50) if params.mmr_lambda is not None else size
        text = params.q if params.w_bm25 > 0 else None
        if self._server_side(params, text, user_vec, q_vec):
            return self._hybrid_server(params, filters, size, text, user_vec, q_vec)
        with timed("elasticsearch", "msearch"):
            retrieval = search.retrieve(self.svc.es, self.index, filters=filters, size=depth, text=text,
                                        user_vector=user_vec, query_vector=q_vec, with_vectors=want_vectors)
        weights = {name: w for name, w in params.weights().items() if name in retrieval.rankings}
        if params.fusion == "rrf":
            fused = fuse_rrf(retrieval.rankings, k=params.rrf_k, weights=weights)
        else:
            fused = fuse_linear(retrieval.rankings, weights=weights, normalization=params.normalization)
        if params.popularity_weight > 0:
            popularity = {i: float(src.get("popularity") or 0) for i, src in retrieval.items.items()}
            fused = apply_popularity_prior(fused, popularity, params.popularity_weight)
        if params.mmr_lambda is not None:
            order = mmr([h.id for h in fused], {h.id: h.score for h in fused}, retrieval.vectors,
                        lambda_=params.mmr_lambda, k=min(size, len(fused)))
            by_id = {h.id: h for h in fused}
            fused = [by_id[i] for i in order]
        page = fused[(params.page - 1) * params.k: params.page * params.k]
        because = self._because(user_id, page, retrieval.vectors) if params.explain and user_id else {}
        items = [self._render(h, retrieval.items.get(h.id, {}), params.explain, because.get(h.id)) for h in page]
        return {"items": items, "strategy": params.fusion, "fusion_side": "app", "cold_start": False,
                "es_took_ms": retrieval.took_ms,
                "retrievers": sorted(retrieval.rankings)}

    def _server_side(self, params: ReadParams, text: str | None, user_vec: np.ndarray | None,
                     q_vec: np.ndarray | None) -> bool:
        """Plain RRF (no explain, MMR or prior; weights 1) over 2+ retrievers can run on the cluster,
        where it has the rrf retriever; everything else needs the per-retriever rankings here."""
        active = [w for w, on in ((params.w_bm25, text), (params.w_user, user_vec), (params.w_query, q_vec))
                  if on is not None]
        plain = (params.fusion == "rrf" and not params.explain and params.mmr_lambda is None
                 and params.popularity_weight == 0 and len(active) >= 2 and all(w == 1.0 for w in active))
        return plain and self.svc.settings.server_fusion == "auto" and server_rrf_available(self.svc.es, self.index)

    def _hybrid_server(self, params: ReadParams, filters: search.Filters, size: int, text: str | None,
                       user_vec: np.ndarray | None, q_vec: np.ndarray | None) -> dict[str, Any]:
        body = rrf_retriever_body(filters=filters, size=size, text=text, user_vector=user_vec, query_vector=q_vec,
                                  rank_constant=params.rrf_k)
        with timed("elasticsearch", "search_rrf"):
            hits, docs, took = search_rrf(self.svc.es, self.index, body)
        page = hits[(params.page - 1) * params.k: params.page * params.k]
        items = [{"id": h.id, "score": h.score, **{k: v for k, v in docs.get(h.id, {}).items() if k != "id"}}
                 for h in page]
        return {"items": items, "strategy": "rrf", "fusion_side": "server", "cold_start": False,
                "es_took_ms": took}

    def _cold_start(self, filters: search.Filters, params: ReadParams, size: int) -> dict[str, Any]:
        """No profile and no query: trending (time-decayed event counts), topped up by catalog popularity."""
        trending = self.store.trending(size * 3 + 20, exclude=filters.exclude_ids)
        ids = search.filtered_ids(self.svc.es, self.index, [i for i, _ in trending], filters)[:size]
        scores = dict(trending)
        hits = [Hit(i, scores[i]) for i in ids]
        if len(hits) < size:
            more = search.popular_items(self.svc.es, self.index,
                                        replace(filters, exclude_ids=filters.exclude_ids + tuple(ids)),
                                        size - len(hits))
            hits.extend(more)
        page = hits[(params.page - 1) * params.k: params.page * params.k]
        docs = search.items_by_id(self.svc.es, self.index, [h.id for h in page])
        items = []
        for rank, hit in enumerate(page, start=(params.page - 1) * params.k + 1):
            entry = {"id": hit.id, "score": hit.score, **{k: v for k, v in docs.get(hit.id, {}).items() if k != "id"}}
            if params.explain:
                entry["explain"] = {"source": "trending" if hit.id in scores else "popularity", "rank": rank}
            items.append(entry)
        return {"items": items, "strategy": "trending", "cold_start": True}

    def _because(self, user_id: str, page: list[FusedHit], vectors: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
        """For each hit, the history item most similar to it: "because you liked X"."""
        history = self.store.history(user_id)[:20]
        if not history:
            return {}
        history_vectors = search.item_vectors(self.svc.es, self.index, history)
        if not history_vectors:
            return {}
        ids = list(history_vectors)
        matrix = np.stack([history_vectors[i] for i in ids])
        out = {}
        for hit in page:
            vector = vectors.get(hit.id)
            if vector is None:
                continue
            sims = matrix @ vector
            best = int(np.argmax(sims))
            out[hit.id] = {"item_id": ids[best], "similarity": round(float(sims[best]), 4)}
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
        vectors = search.item_vectors(self.svc.es, self.index, [item_id])
        if item_id not in vectors:
            raise NotFound(f"item {item_id!r} is not in the catalog (or has no vector yet)")
        return self.recommend(None, params, anchor_vector=vectors[item_id], anchor_id=item_id)
