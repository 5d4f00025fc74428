"""The serving collaborative model as one process sees it: the pointer (re-read every few seconds), the
model's artifacts (loaded once per version), and what a request needs from them: the item-item query's
history weights, the folded-in user factor, the "because you liked" item and the cold-item factors."""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError
from threadpoolctl import ThreadpoolController

from indexer import model_registry as registry
from indexer.cf_fields import factors_field, neighbours_field
from indexer.cf_models import fold_in
from indexer.cf_scoring import ITEM_QUERY_TERMS, RECENT_CUTOFF_HALF_LIVES, fold_in_weights, recency_weights
from indexer.fusion import Hit
from indexer.heap import freeze_long_lived
from indexer.interactions import Interaction
from indexer.settings import Settings

__all__ = ["ModelCache", "ServingModel"]

POINTER_TTL_S = 2.0
# A cold item borrows the item-item weights of the warm items nearest to its content-mapped factors: this
# many, and at this discount (a borrowed weight counts 0.9 of a learned one). Measured on ML-100K
# validation with 10% of the items hidden (eval/README.md, "Cold items"): any exposure of cold items costs
# the warm ones, so the discount is the smallest one tried (0.8, 0.9, 1.0) whose cold recall@10 beats
# content-only's with the paired interval above zero; at 0.8 it did not.
COLD_NEIGHBOUR_ITEMS = 10
COLD_NEIGHBOUR_DISCOUNT = 0.9


@cache
def _blas() -> ThreadpoolController:
    """The process's thread pools, inspected once (a fresh inspection per request costs more than the solve)."""
    return ThreadpoolController()


@dataclass
class ServingModel:
    version: int
    slot: str
    info: dict[str, Any]
    artifacts: registry.Artifacts

    def __post_init__(self) -> None:
        self.row = {item: i for i, item in enumerate(self.artifacts.item_ids)}
        self.incoming = self.artifacts.neighbours.tocsc()
        negatives = self.artifacts.negatives
        self.negatives = negatives.tocsc() if negatives is not None and negatives.nnz else None
        params = self.info.get("params", {})
        self.half_life = float(params.get("recent_half_life", 10.0))
        self.gamma = float(params.get("item_gamma", 0.0))
        # Models trained before the tilt had its own half-life used the recent list's.
        self.item_half_life = float(params.get("item_half_life", self.half_life))
        self.regularization = float(params.get("als_regularization", 1.0))
        self.alpha = float(params.get("als_alpha", 1.0))
        # Models trained before the fold-in leaned towards recent items folded the history in flat.
        self.cf_recency = float(params.get("cf_recency", 0.0))
        self.cf_half_life = float(params.get("cf_half_life", 5.0))
        self._unit_factors: np.ndarray | None = None

    @property
    def neighbours_field(self) -> str:
        return neighbours_field(self.slot)

    @property
    def factors_field(self) -> str:
        return factors_field(self.slot)

    def defaults(self) -> dict[str, Any]:
        """The fusion defaults chosen for this model on held-out events."""
        params = self.info.get("params", {})
        return {key: params[key] for key in ("fusion", "w_item", "w_recent", "w_cf", "w_user", "popularity_weight")
                if key in params}

    def knows_any(self, history: Sequence[Interaction]) -> bool:
        return any(entry.item_id in self.row for entry in history)

    def history_weights(self, history: Sequence[Interaction], recent: bool = False) -> list[tuple[str, float]]:
        """(item id, weight) for an item-item query, newest first, known items only: the long-term retriever
        weighs its newest ITEM_QUERY_TERMS items by (1 - gamma) + gamma * 0.5 ** (age / item_half_life), the
        recent one halves every `half_life` events back and stops where the weights stop mattering."""
        newest = [entry for entry in history if entry.item_id in self.row][:ITEM_QUERY_TERMS]
        if recent:
            newest = newest[:int(RECENT_CUTOFF_HALF_LIVES * self.half_life)]
            weights = recency_weights(len(newest), 1.0, self.half_life)[::-1]
        else:
            weights = recency_weights(len(newest), self.gamma, self.item_half_life)[::-1]
        return [(entry.item_id, float(weight)) for entry, weight in zip(newest, weights, strict=True)]

    def user_factor(self, history: Sequence[Interaction]) -> np.ndarray | None:
        """The user's latent factor, folded in from the history (newest first) against the model's item
        factors: each known history item once, at the confidence its age gives (cf_scoring.fold_in_weights
        with the model's cf_recency and cf_half_life; flat when cf_recency is 0, as the model was trained)."""
        newest: dict[int, None] = dict.fromkeys(self.row[e.item_id] for e in history
                                                if e.item_id in self.row and e.weight > 0)
        if not newest:
            return None
        rows = list(newest)
        weights = fold_in_weights(len(rows), self.cf_recency, self.cf_half_life)
        # A 64-d solve is too small to share: BLAS threads only wait for each other and for the other
        # requests on the same cores (bench/serving.py: fold-in p99 6.2 ms with two threads, 0.4 ms with one).
        with _blas().limit(limits=1, user_api="blas"):
            vector = fold_in(self.artifacts.factors[rows], self.artifacts.gram, weights.tolist(),
                             self.regularization, self.alpha)
        return vector if np.isfinite(vector).all() and np.any(vector) else None

    def rescore(self, hits: Sequence[Hit], history: Sequence[tuple[str, float]]) -> list[Hit]:
        """The item-item hits Elasticsearch scored with the positive weights, minus the negative weights
        (sum_i w_i * N[i, j], kept here), best first: the model's full prediction for each hit."""
        if self.negatives is None or not hits:
            return list(hits)
        weights = np.zeros(self.negatives.shape[0])
        for item_id, weight in history:
            weights[self.row[item_id]] = weight
        indptr, indices, data = self.negatives.indptr, self.negatives.indices, self.negatives.data
        out = []
        for hit in hits:
            column = self.row.get(hit.id)
            penalty = 0.0
            if column is not None:
                start, end = indptr[column], indptr[column + 1]
                penalty = float(weights[indices[start:end]] @ data[start:end])
            out.append(Hit(hit.id, hit.score - penalty))
        return sorted(out, key=lambda h: -h.score)

    def because(self, item_id: str, history: Sequence[tuple[str, float]]) -> dict[str, Any] | None:
        """The history item whose item-item weight contributes most to this item's score."""
        column = self.row.get(item_id)
        if column is None:
            return None
        start, end = self.incoming.indptr[column], self.incoming.indptr[column + 1]
        incoming = dict(zip(self.incoming.indices[start:end].tolist(), self.incoming.data[start:end].tolist(),
                            strict=True))
        best: tuple[float, str] | None = None
        for source, weight in history:
            row = self.row.get(source)
            if row is not None and row in incoming and (best is None or weight * incoming[row] > best[0]):
                best = (weight * incoming[row], source)
        return {"item_id": best[1], "contribution": round(best[0], 6)} if best else None

    def cold_factors(self, embedding: Sequence[float] | None) -> np.ndarray | None:
        """Factors for an item the model never saw, mapped from its content embedding."""
        content_map = self.artifacts.content_map
        if embedding is None or content_map.size == 0 or len(embedding) != content_map.shape[0]:
            return None
        factors: np.ndarray = np.asarray(embedding, dtype=np.float32) @ content_map
        return factors

    def cold_neighbours(self, factors: np.ndarray | None) -> dict[str, float] | None:
        """Item-item weights for an item the model never saw: the incoming weights of the warm items whose
        learned factors point the way its content-mapped `factors` do (cosine, the COLD_NEIGHBOUR_ITEMS
        nearest, weighted by similarity share), each net of that item's negative weights, discounted by
        COLD_NEIGHBOUR_DISCOUNT, positive part kept and cut to as many sources as a warm item stores.

        The item-item retriever is the one the learned fusion always weighs (often alone): without these
        weights an untouched item can reach the default list only through the factor kNN, which the fusion
        may switch off, and whose mapped factors are too short to compete under max_inner_product."""
        if factors is None or not self.artifacts.item_ids or not np.any(factors):
            return None
        if self._unit_factors is None:
            y = self.artifacts.factors.astype(np.float32)
            self._unit_factors = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        query = np.asarray(factors, dtype=np.float32)
        sims = self._unit_factors @ (query / np.linalg.norm(query))
        m = min(COLD_NEIGHBOUR_ITEMS, len(sims))
        nearest = np.argpartition(-sims, m - 1)[:m]
        nearest = nearest[sims[nearest] > 0]
        if not len(nearest):
            return None
        shares = COLD_NEIGHBOUR_DISCOUNT * sims[nearest] / sims[nearest].sum()
        column = np.zeros(len(self.artifacts.item_ids), dtype=np.float64)
        for source, share in ((self.incoming, 1.0), (self.negatives, -1.0)):
            if source is None:
                continue
            for item, weight in zip(nearest, shares, strict=True):
                start, end = source.indptr[item], source.indptr[item + 1]
                column[source.indices[start:end]] += share * weight * source.data[start:end]
        keep = np.flatnonzero(column > 0)
        stored = int(np.diff(self.incoming.indptr).max()) if self.incoming.nnz else 0
        if stored == 0:
            return None
        if len(keep) > stored:
            keep = keep[np.argpartition(-column[keep], stored - 1)[:stored]]
        return {self.artifacts.item_ids[i]: float(column[i]) for i in keep} or None


class ModelCache:
    """Per process: the pointer, re-read at most every POINTER_TTL_S seconds, and the artifacts of the
    versions it names (the serving one and, during a promotion, the slot being written)."""

    def __init__(self, es: Elasticsearch, settings: Settings) -> None:
        self.es = es
        self.settings = settings
        self._lock = threading.Lock()
        self._pointer: tuple[float, registry.Pointer] | None = None
        self._models: dict[int, ServingModel] = {}

    def pointer(self) -> registry.Pointer:
        now = time.monotonic()
        cached = self._pointer
        if cached and now - cached[0] < POINTER_TTL_S:
            return cached[1]
        try:
            pointer = registry.read_pointer(self.es, self.settings)
        except NotFoundError:  # no models index yet (a catalog that never trained)
            pointer = registry.Pointer(None, None, {slot: None for slot in registry.SLOTS})
        except (ApiError, TransportError):
            if cached is None:
                raise
            # A slow or failed read keeps the model that was serving: a flicker to model-free lists would
            # be worse than a pointer a few seconds old (the old slot stays intact until the next promotion).
            pointer = cached[1]
        self._pointer = (now, pointer)
        return pointer

    def invalidate(self) -> None:
        self._pointer = None

    def model(self, version: int, slot: str) -> ServingModel:
        with self._lock:
            model = self._models.get(version)
            if model is None or model.slot != slot:
                info = registry.load_model(self.es, self.settings, version)
                artifacts = registry.load_artifacts(self.es, self.settings, version)
                model = ServingModel(version, slot, info.info if info else {}, artifacts)
                # Keep the two slots' models at most: older versions are not served any more.
                live = {v for v in self.pointer().slots.values() if v is not None} | {version}
                self._models = {v: m for v, m in self._models.items() if v in live}
                self._models[version] = model
                freeze_long_lived(f"model {version}")
            return model

    def serving(self) -> ServingModel | None:
        pointer = self.pointer()
        if pointer.version is None or pointer.slot is None:
            return None
        return self.model(pointer.version, pointer.slot)

    def slot_models(self) -> dict[str, ServingModel]:
        """The model each slot holds (for writing cold-item factors into both)."""
        return {slot: self.model(version, slot) for slot, version in self.pointer().slots.items()
                if version is not None}
