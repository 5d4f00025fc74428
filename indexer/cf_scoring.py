"""Offline scoring of the collaborative retrievers and their fusion, in numpy, for choosing a model's
settings on held-out events: the same formulas Elasticsearch and the engine apply at request time
(item-item sums, fold-in dot products, min-max linear fusion over each retriever's top hits, the
popularity prior), over many users at once."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from indexer.cf_models import fold_in
from indexer.fusion import FUSION_DEPTH
from indexer.interactions import MAX_INTERACTIONS

# The recent item-item retriever stops after this many half-lives (weights below 1/16 of the newest).
RECENT_CUTOFF_HALF_LIVES = 4
# The long-term item-item query boosts one term per history item, newest first, up to this many: every
# interaction a profile keeps. Each term costs the search about 0.08 ms at 100k items (bench/serving.py), so
# the longest histories set the p99; a cut at 200 took 4 ms off the raw p99 there, but on ML-100K validation
# (through the training's choice of settings) it cost the leave-last-out default 8% of its NDCG@10.
ITEM_QUERY_TERMS = MAX_INTERACTIONS

__all__ = ["ITEM_QUERY_TERMS", "RECENT_CUTOFF_HALF_LIVES", "Candidates", "FusionSetting", "Scorer", "TopLists",
           "batch_ndcg", "coverage", "fold_in_weights", "recency_weights", "score_lists"]

Scores = Callable[[Sequence[int]], np.ndarray]


def recency_weights(n: int, gamma: float, half_life: float) -> np.ndarray:
    """Weights of a history of n items, oldest first: (1 - gamma) + gamma * 0.5 ** (age / half_life),
    age in events (0 = newest). gamma 0 is a flat history, gamma 1 pure recency."""
    ages = np.arange(n - 1, -1, -1, dtype=np.float64)
    return (1.0 - gamma) + gamma * np.power(0.5, ages / half_life)


def fold_in_weights(n: int, boost: float, half_life: float) -> np.ndarray:
    """Fold-in confidences of a history of n items, newest first: 1 + boost * 0.5 ** (age / half_life), age in
    events (0 = newest). boost 0 is the binary history the latent model was trained on; a boost makes the
    user factor lean towards what the user did last without dropping the older items."""
    ages = np.arange(n, dtype=np.float64)
    out: np.ndarray = 1.0 + boost * np.power(0.5, ages / half_life)
    return out


def _minmax(raw: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Min-max per row over the entries where `ok` (as indexer.fusion.normalize_minmax: no spread -> 1.0);
    0 elsewhere."""
    low = np.where(ok, raw, np.inf).min(axis=1, keepdims=True)
    high = np.where(ok, raw, -np.inf).max(axis=1, keepdims=True)
    spread = np.where(np.isfinite(high - low), high - low, 0.0)
    safe = np.where(ok, raw, 0.0)
    normalised = np.where(spread > 0, (safe - np.where(np.isfinite(low), low, 0.0)) / np.where(spread > 0, spread, 1.0),
                          1.0)
    return np.where(ok, normalised, 0.0)


def batch_ndcg(ranked: np.ndarray, valid: np.ndarray, targets: Sequence[set[int]], k: int = 10) -> np.ndarray:
    """NDCG@k per row of `ranked` (items, best first; entries where `valid` is False are not in the list)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ranked, valid = ranked[:, :k], valid[:, :k]
    # Membership of (row, item) pairs, all rows at once: each pair as one integer key.
    span = int(max(ranked.max(initial=0), max((max(t, default=0) for t in targets), default=0))) + 1
    sizes = np.asarray([len(t) for t in targets], dtype=np.int64)
    wanted = np.fromiter((row * span + item for row, relevant in enumerate(targets) for item in relevant if item >= 0),
                         dtype=np.int64)
    keys = np.arange(len(targets), dtype=np.int64)[:, None] * span + ranked
    hits = np.isin(keys, wanted) & valid & (ranked >= 0)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(sizes, k)]
    gains = (hits * discounts[:hits.shape[1]]).sum(axis=1)
    ndcg: np.ndarray = np.divide(gains, ideal, out=np.zeros(len(targets)), where=ideal > 0)
    return ndcg


@dataclass(frozen=True)
class TopLists:
    """One retriever's top items per user (rows), and their min-max normalised scores."""

    rows: list[int]
    indices: np.ndarray
    values: np.ndarray
    valid: np.ndarray  # False where the retriever had fewer than depth hits


@dataclass(frozen=True)
class FusionSetting:
    """Weights of the retrievers (0 switches one off) and of the popularity prior."""

    weights: Mapping[str, float]
    popularity: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {**{f"w_{name}": float(w) for name, w in self.weights.items()}, "popularity_weight": self.popularity}


@dataclass(frozen=True)
class Candidates:
    """Per user (rows), the items any retriever returned (-1 pads), each retriever's normalised value and
    hit flag on them, and the items' log popularity."""

    rows: list[int]
    items: np.ndarray
    values: Mapping[str, np.ndarray]
    hits: Mapping[str, np.ndarray]
    log_popularity: np.ndarray

    def rank(self, setting: FusionSetting, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The top k of the list the engine's linear fusion makes (indexer.fusion) with this setting, per
        row: (item indices, False where the list is shorter). The weighted sum of the active retrievers'
        min-max values, plus the popularity prior scaled by the most popular of the request's own hits."""
        active = [name for name in self.values if setting.weights.get(name, 0.0) > 0]
        if not active or not self.rows:
            return np.full((len(self.rows), 0), -1, dtype=np.int64), np.zeros((len(self.rows), 0), dtype=bool)
        fused = np.zeros(self.items.shape)
        touched = np.zeros(self.items.shape, dtype=bool)
        for name in active:
            fused += setting.weights[name] * self.values[name]
            touched |= self.hits[name]
        if setting.popularity > 0:
            log_pop = np.where(touched, self.log_popularity, 0.0)
            top_pop = log_pop.max(axis=1, keepdims=True)
            fused += setting.popularity * np.divide(log_pop, top_pop, out=np.zeros_like(log_pop), where=top_pop > 0)
        fused = np.where(touched, fused, -np.inf)
        n_rows, width = self.items.shape
        k = min(k, width)
        best = np.argpartition(-fused, k - 1, axis=1)[:, :k] if k < width else np.tile(np.arange(width), (n_rows, 1))
        order = np.argsort(-np.take_along_axis(fused, best, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        return np.take_along_axis(self.items, best, axis=1), np.take_along_axis(touched, best, axis=1)

    def ndcg(self, setting: FusionSetting, targets: Mapping[int, set[int]], k: int = 10) -> float:
        """Mean NDCG@k of the fused list over the rows that have targets."""
        return score_lists(self.rows, *self.rank(setting, k), targets, k)


def score_lists(rows: Sequence[int], ranked: np.ndarray, ok: np.ndarray, targets: Mapping[int, set[int]],
                k: int = 10) -> float:
    """Mean NDCG@k over the rows (users) that have targets, of lists ranked for `rows`."""
    keep = [position for position, row in enumerate(rows) if row in targets]
    if not keep or ranked.shape[1] == 0:
        return 0.0
    return float(batch_ndcg(ranked[keep], ok[keep], [targets[rows[p]] for p in keep], k).mean())


def coverage(ranked: np.ndarray, ok: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one of the lists."""
    return float(np.unique(ranked[ok]).size / n_items) if n_items else 0.0


class Scorer:
    """Per-user score rows of each retriever for a set of held-out users, computed in chunks."""

    def __init__(self, histories: Sequence[Sequence[tuple[int, float, float]]], n_items: int,
                 popularity: np.ndarray, limit: int = MAX_INTERACTIONS) -> None:
        # A live profile keeps only the newest `limit` interactions: score with what serving will see.
        self.histories = [list(history[-limit:]) for history in histories]
        self.n_items = n_items
        self.log_popularity = np.log1p(np.maximum(popularity, 0.0))
        self._histories: dict[tuple[float, float, int], csr_matrix] = {}

    def history_matrix(self, rows: Sequence[int], gamma: float = 0.0, half_life: float = 10.0,
                       newest: int = 0) -> csr_matrix:
        """Users' history weights (binary, or recency-weighted), one row per entry of `rows`; with `newest`,
        only that many of each user's newest interactions."""
        key = (gamma, half_life, newest) if gamma > 0 else (0.0, 0.0, newest)
        full = self._histories.get(key)
        if full is None:
            indptr: list[int] = [0]
            indices: list[int] = []
            data: list[float] = []
            for history in self.histories:
                if newest:
                    history = history[-newest:]
                if gamma >= 1.0:  # the recent retriever's cut (indexer.cf_serving.RECENT_CUTOFF_HALF_LIVES)
                    history = history[-int(RECENT_CUTOFF_HALF_LIVES * half_life):]
                weights = recency_weights(len(history), gamma, half_life) if gamma > 0 else np.ones(len(history))
                merged: dict[int, float] = {}
                for (item, _, _), weight in zip(history, weights, strict=True):
                    merged[item] = max(merged.get(item, 0.0), float(weight))
                indices.extend(merged)
                data.extend(merged.values())
                indptr.append(len(indices))
            full = csr_matrix((np.asarray(data, dtype=np.float64), indices, indptr),
                              shape=(len(self.histories), self.n_items))
            full.sort_indices()
            self._histories[key] = full
        return full[np.asarray(rows, dtype=np.int64)]

    def item_item_lists(self, positive: csr_matrix, negative: csr_matrix, gamma: float, half_life: float,
                        rows: Sequence[int], depth: int = FUSION_DEPTH, chunk: int = 256) -> TopLists:
        """The item-item retriever as served: Elasticsearch returns the top `depth` items by the positive
        weights (items matching no history item are not hits), then the engine subtracts the negative
        weights and re-orders them (indexer.cf_serving.ServingModel.rescore)."""
        def block(part: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
            h = self.history_matrix(part, gamma, half_life, ITEM_QUERY_TERMS)
            pos = np.asarray((h @ positive).todense())
            pos[pos <= 0] = -np.inf
            return pos, pos - np.asarray((h @ negative).todense())
        return self._top(block, rows, depth, chunk)

    def content(self, item_vectors: np.ndarray, user_vectors: Mapping[int, np.ndarray]) -> Scores:
        """Dot product of each user's content interest vector with every item's embedding."""
        def scores(rows: Sequence[int]) -> np.ndarray:
            users = np.stack([user_vectors.get(row, np.zeros(item_vectors.shape[1])) for row in rows])
            dots: np.ndarray = users @ item_vectors.T
            return dots
        return scores

    def latent(self, factors: np.ndarray, regularization: float, alpha: float, boost: float = 0.0,
               half_life: float = 5.0) -> Scores:
        """Item factors dotted with each user's folded-in factor (indexer.cf_serving.ServingModel.user_factor):
        each history item once, newest first, at the confidence fold_in_weights gives its age."""
        gram = factors.T @ factors

        def scores(rows: Sequence[int]) -> np.ndarray:
            out = np.zeros((len(rows), self.n_items))
            for position, row in enumerate(rows):
                newest: dict[int, None] = dict.fromkeys(item for item, _, _ in reversed(self.histories[row]))
                if newest:
                    items = list(newest)
                    weights = fold_in_weights(len(items), boost, half_life)
                    out[position] = factors @ fold_in(factors[items], gram, weights.tolist(), regularization, alpha)
            return out
        return scores

    def top_lists(self, scores: Scores, rows: Sequence[int], depth: int = FUSION_DEPTH,
                  chunk: int = 256) -> TopLists:
        """Each user's top `depth` items of one retriever (history excluded), with min-max normalised
        scores: all that linear fusion reads from a retriever."""
        def block(part: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
            values = scores(part)
            return values, values
        return self._top(block, rows, depth, chunk)

    def _top(self, block: Callable[[Sequence[int]], tuple[np.ndarray, np.ndarray]], rows: Sequence[int],
             depth: int, chunk: int) -> TopLists:
        """`block(users)` gives (the scores hits are selected by, the scores they end with); -inf in the
        first marks a non-hit. The users' history items are never hits."""
        depth = min(depth, self.n_items - 1)
        indices = np.zeros((len(rows), depth), dtype=np.int64)
        values = np.zeros((len(rows), depth))
        valid = np.zeros((len(rows), depth), dtype=bool)
        for start in range(0, len(rows), chunk):
            part = list(rows[start:start + chunk])
            select, final = block(part)
            select[self.history_matrix(part).nonzero()] = -np.inf
            top = np.argpartition(-select, depth, axis=1)[:, :depth]
            ok = np.isfinite(np.take_along_axis(select, top, axis=1))
            indices[start:start + len(part)] = top
            values[start:start + len(part)] = _minmax(np.take_along_axis(final, top, axis=1), ok)
            valid[start:start + len(part)] = ok
        return TopLists(list(rows), indices, values, valid)

    def candidates(self, lists: Mapping[str, TopLists]) -> Candidates:
        """The union of the retrievers' hits per user, with each retriever's normalised value on it: all
        that fusion reads, laid out once so that many settings can be scored over the same lists."""
        names = list(lists)
        first = lists[names[0]]
        n_users, depth = first.indices.shape
        joined = np.concatenate([lists[name].indices for name in names], axis=1)
        order = np.argsort(joined, axis=1, kind="stable")
        ordered = np.take_along_axis(joined, order, axis=1)
        new_item = np.ones_like(ordered, dtype=bool)
        new_item[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        slot_of_ordered = np.cumsum(new_item, axis=1) - 1
        slots = np.empty_like(slot_of_ordered)
        np.put_along_axis(slots, order, slot_of_ordered, axis=1)
        width = int(slot_of_ordered[:, -1].max()) + 1 if joined.size else 0
        items = np.full((n_users, width), -1, dtype=np.int64)
        users = np.arange(n_users)[:, None]
        items[users, slots] = joined
        values, hits = {}, {}
        for position, name in enumerate(names):
            # A list never holds one item twice, so its entries land in distinct slots.
            part = slots[:, position * depth:(position + 1) * depth]
            values[name] = np.zeros((n_users, width))
            values[name][users, part] = lists[name].values
            hits[name] = np.zeros((n_users, width), dtype=bool)
            hits[name][users, part] = lists[name].valid
        return Candidates(list(first.rows), items, values, hits, self.log_popularity[np.maximum(items, 0)])

    def evaluate(self, lists: Mapping[str, TopLists], setting: FusionSetting, targets: Mapping[int, set[int]],
                 k: int = 10) -> float:
        """Mean NDCG@k of the fused list over the users in `targets` (the rows of the lists)."""
        return self.candidates(lists).ndcg(setting, targets, k)

    def popularity_ndcg(self, targets: Mapping[int, set[int]], k: int = 10) -> float:
        if not targets:
            return 0.0
        order = np.argsort(-self.log_popularity, kind="stable")
        ranked = np.full((len(targets), k), -1, dtype=np.int64)
        for position, row in enumerate(targets):
            seen = {item for item, _, _ in self.histories[row]}
            top = [item for item in order[: k + len(seen)] if item not in seen][:k]
            ranked[position, :len(top)] = top
        return float(batch_ndcg(ranked, ranked >= 0, list(targets.values()), k).mean())
