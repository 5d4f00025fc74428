"""Training a collaborative model version from the events index: fit the item-item and latent-factor
models, choose their settings and the fusion weights on held-out events, gate, save, and promote.

The steps, each measured: read histories (events index) -> hold out each user's newest item and a tenth
of the others -> fit on the rest over a grid -> score every setting on both held-out slices -> choose
(`pick`: within 2% of the best on the random slice, the best on the newest items) -> refit the chosen
setting on everything -> gate against popularity (first model) or the serving model -> save to the
registry -> promote if it passed.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan
from scipy.sparse import csr_matrix

from indexer import model_registry as registry
from indexer.cf_models import (
    EASE_MAX_ITEMS,
    fit_als,
    fit_cooccurrence_neighbours,
    fit_ease,
    fit_ridge_map,
    interaction_matrix,
    prune_columns,
)
from indexer.cf_scoring import FusionSetting, Scorer, TopLists, coverage, score_lists
from indexer.lifecycle import alias_name
from indexer.mappings import index_definition
from indexer.profile import query_vector
from indexer.profile_store import AppliedEvent, profile_from_events
from indexer.settings import Settings
from indexer.training_data import Holdout, TrainingData, read_histories, split_holdout

__all__ = ["TrainOptions", "TrainResult", "due", "train"]

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]
# How far below the best on the random held-out slice a chosen setting may fall (see pick).
RANDOM_SLICE_TOLERANCE = 0.02


@dataclass(frozen=True)
class TrainOptions:
    """The search space and the gate. Defaults measured on MovieLens-100K validation (eval/README.md)."""

    lambdas: tuple[float, ...] = (100.0, 300.0, 1000.0)
    neighbours: int = 100
    # The recent item-item list halves its weights every `half_life` events back (and stops after four).
    recent_half_lives: tuple[float, ...] = (4.0, 10.0)
    # The long-term item-item list weighs history item i by (1 - gamma) + gamma * 0.5 ** (age_i / item_half_life):
    # a tilt towards recent events that keeps the whole history's evidence.
    item_gammas: tuple[float, ...] = (0.0, 0.3, 0.6)
    item_half_life: float = 10.0
    recent_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    als_regularization: float = 10.0
    als_alpha: float = 1.0
    als_iterations: int = 15
    cf_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    # The latent list's fold-in weighs history item i by 1 + cf_recency * 0.5 ** (age_i / cf_half_life)
    # (cf_scoring.fold_in_weights): the user factor leans towards the latest events.
    cf_recencies: tuple[float, ...] = (0.0, 10.0)
    cf_half_life: float = 10.0
    user_weights: tuple[float, ...] = (0.0, 0.25)
    # The popularity prior is off unless asked for: on MovieLens-100K's held-out events it gained nothing
    # beyond noise and cost catalog coverage (eval/README.md); a request can still set popularity_weight.
    popularity_weights: tuple[float, ...] = (0.0,)
    holdout_users: int = 3000
    min_events: int = 20
    gate_tolerance: float = 0.02  # a new model may score at most 2% below the serving one
    random_slice_tolerance: float = RANDOM_SLICE_TOLERANCE
    seed: int = 2024
    promote: bool = True


@dataclass
class TrainResult:
    version: int | None
    state: str
    info: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "state": self.state, "reason": self.reason, **self.info}


def factor_dims(settings: Settings) -> int:
    """The latent factor count: the dims of the items mapping's factor fields (one home for it)."""
    return int(index_definition("items", settings)["mappings"]["properties"]["cf_a_factors"]["dims"])


def item_catalog(es: Elasticsearch, settings: Settings) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Content embedding and catalog popularity of every item (scan; for the cold-item map and the prior)."""
    vectors: dict[str, np.ndarray] = {}
    popularity: dict[str, float] = {}
    hits = scan(es.options(request_timeout=120), index=alias_name(settings, "items"), size=1000, scroll="5m",
                query={"query": {"match_all": {}}}, source_includes=["embedding", "popularity"])
    for hit in hits:
        src = hit.get("_source") or {}
        if src.get("embedding"):
            vectors[hit["_id"]] = np.asarray(src["embedding"], dtype=np.float32)
        popularity[hit["_id"]] = float(src.get("popularity") or 0.0)
    return vectors, popularity


def _neighbour_model(x: Any, lam: float, k: int) -> tuple[csr_matrix, csr_matrix]:
    """(positive weights for Elasticsearch, negative magnitudes for the re-scoring), both pruned to the k
    strongest per target item."""
    if x.shape[1] > EASE_MAX_ITEMS:
        positive = fit_cooccurrence_neighbours(x, k).matrix
        return positive, csr_matrix(positive.shape, dtype=np.float64).astype(np.float32)
    b = fit_ease(x, lam)
    return prune_columns(b, k).matrix, prune_columns(b, k, negative=True).matrix


def content_vectors(data: TrainingData, rows: Iterable[int], content: dict[str, np.ndarray],
                    half_life_s: float) -> dict[int, np.ndarray]:
    """The content interest vector each user's training history gives, by the live profile's rule."""
    out = {}
    for row in rows:
        events = [AppliedEvent(data.item_ids[item], weight, ts, None) for item, weight, ts in data.histories[row]]
        if not events:
            continue
        vector = query_vector(profile_from_events(events, content, half_life_s), now=max(e.ts for e in events))
        if vector is not None:
            out[row] = vector
    return out


@dataclass(frozen=True)
class Trial:
    """One setting of the grid and its NDCG@10 per held-out slice; `floor` is its item-item list alone
    (same lambda and tilt) on the same slices."""

    setting: dict[str, Any]
    scores: dict[str, float]
    floor: dict[str, float]
    coverage: float = 0.0  # share of the catalog in the held-out users' top 10s


def pick(trials: Sequence[Trial], tolerance: float = RANDOM_SLICE_TOLERANCE) -> int:
    """The chosen trial: among the settings within `tolerance` (relative) of the best on the 'random' slice
    and on no slice below their own item-item list alone, the best on the 'next' slice.

    The random slice is a missing interest anywhere in the history, what a list must keep finding; the
    next slice is what the user does next, which a recency tilt serves. A tilt that buys next-item gains
    with a large loss on the random slice gives up the user's standing interests, so the random slice
    bounds the choice and the next slice decides within the bound. With one slice only, its best wins.
    """
    if not trials:
        raise ValueError("no settings were scored")
    slices = list(trials[0].scores)
    anchor = "random" if "random" in slices else slices[0]
    target = "next" if "next" in slices else anchor
    best_anchor = max(t.scores[anchor] for t in trials)
    keep = [i for i, t in enumerate(trials)
            if t.scores[anchor] >= best_anchor * (1.0 - tolerance)
            and all(t.scores[s] >= t.floor[s] for s in slices)]
    if not keep:  # nothing beats its own item-item list: fall back to the bound alone
        keep = [i for i, t in enumerate(trials) if t.scores[anchor] >= best_anchor * (1.0 - tolerance)]
    return max(keep, key=lambda i: (trials[i].scores[target], trials[i].scores[anchor]))


def score_grid(holdout: Holdout, popularity: np.ndarray, options: TrainOptions, factors: int,
               content: dict[str, np.ndarray], half_life_s: float,
               progress: Progress | None = None) -> tuple[list[Trial], dict[str, float]]:
    """Every setting of the grid scored on the held-out slices, and popularity's NDCG@10 per slice. The
    slices hold out items of the same users, so each retriever's lists are computed once for all of them."""
    train = holdout.train
    n_items = len(train.item_ids)
    x = interaction_matrix([[(i, 1.0) for i, _, _ in h] for h in train.histories], n_items)
    scorer = Scorer(train.histories, n_items, popularity)
    baseline = {name: scorer.popularity_ndcg(targets) for name, targets in holdout.slices.items()}
    rows = sorted({row for targets in holdout.slices.values() for row in targets})
    # Binary confidence (every interaction 1): event-type weights did not help ALS on validation.
    item_factors = fit_als(x, factors, options.als_regularization, options.als_alpha,
                           options.als_iterations, options.seed)
    latent = {recency: scorer.top_lists(scorer.latent(item_factors, options.als_regularization, options.als_alpha,
                                                      recency, options.cf_half_life), rows)
              for recency in options.cf_recencies}
    fixed: dict[str, TopLists] = {}
    dims = len(next(iter(content.values()))) if content else 0
    if dims and any(options.user_weights):
        item_vectors = np.stack([content.get(item, np.zeros(dims, dtype=np.float32)) for item in train.item_ids])
        fixed["user"] = scorer.top_lists(scorer.content(item_vectors, content_vectors(train, rows, content,
                                                                                       half_life_s)), rows)
    user_weights = options.user_weights if "user" in fixed else (0.0,)
    lambdas = options.lambdas if n_items <= 3000 else options.lambdas[:1]
    trials: list[Trial] = []
    for step, lam in enumerate(lambdas):
        positive, negative = _neighbour_model(x, lam, options.neighbours)
        items = {gamma: scorer.item_item_lists(positive, negative, gamma, options.item_half_life, rows)
                 for gamma in options.item_gammas}
        # Each tilt's item-item list alone, whatever the other lists: the floor every fusion must clear.
        floors = {}
        for gamma, top in items.items():
            alone = scorer.candidates({"item": top}).rank(FusionSetting({"item": 1.0}))
            floors[gamma] = {name: score_lists(rows, *alone, targets) for name, targets in holdout.slices.items()}
        for half_life in options.recent_half_lives:
            recent = scorer.item_item_lists(positive, negative, 1.0, half_life, rows)
            for gamma, (recency, cf) in product(options.item_gammas, latent.items()):
                candidates = scorer.candidates({"cf": cf, **fixed, "recent": recent, "item": items[gamma]})
                floor = floors[gamma]
                for w_recent, w_cf, w_user, pop in product(options.recent_weights, options.cf_weights, user_weights,
                                                           options.popularity_weights):
                    if recency != options.cf_recencies[0] and not w_cf:
                        continue  # the fold-in's weighting does not matter without the latent list
                    setting = FusionSetting({"item": 1.0, "recent": w_recent, "cf": w_cf, "user": w_user}, pop)
                    ranked = candidates.rank(setting)
                    scores = {name: score_lists(rows, *ranked, targets) for name, targets in holdout.slices.items()}
                    trials.append(Trial({"ease_lambda": lam, "recent_half_life": half_life, "item_gamma": gamma,
                                         "item_half_life": options.item_half_life, "fusion": "linear",
                                         "w_item": 1.0, "w_recent": w_recent, "w_cf": w_cf, "w_user": w_user,
                                         "popularity_weight": pop, "als_regularization": options.als_regularization,
                                         "als_alpha": options.als_alpha, "cf_recency": recency,
                                         "cf_half_life": options.cf_half_life}, scores, floor,
                                        coverage(*ranked, n_items)))
        if progress:
            progress("choosing settings", 0.2 + 0.6 * (step + 1) / len(lambdas))
    return trials, baseline


def choose(holdout: Holdout, popularity: np.ndarray, options: TrainOptions, factors: int,
           content: dict[str, np.ndarray], half_life_s: float,
           progress: Progress | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The setting `pick` chooses over the grid. Returns (chosen setting, metrics: per slice, popularity's,
    the lift over popularity ("objective"))."""
    trials, baseline = score_grid(holdout, popularity, options, factors, content, half_life_s, progress)
    chosen = trials[pick(trials, options.random_slice_tolerance)]
    metrics: dict[str, Any] = {f"ndcg@10_{name}": round(value, 5) for name, value in chosen.scores.items()}
    metrics.update({f"popularity_ndcg@10_{name}": round(value, 5) for name, value in baseline.items()})
    metrics["objective"] = round(float(np.mean([value / baseline[n] if baseline[n] > 0 else value
                                                for n, value in chosen.scores.items()])), 5)
    metrics["coverage@10"] = round(chosen.coverage, 4)
    metrics["settings_tried"] = len(trials)
    return chosen.setting, metrics


def fit_final(data: TrainingData, chosen: dict[str, Any], options: TrainOptions, factors: int,
              content: dict[str, np.ndarray]) -> registry.Artifacts:
    """Refit the chosen setting on every interaction, held-out ones included."""
    x = interaction_matrix([[(i, 1.0) for i, _, _ in h] for h in data.histories], len(data.item_ids))
    positive, negative = _neighbour_model(x, float(chosen["ease_lambda"]), options.neighbours)
    item_factors = fit_als(x, factors, options.als_regularization, options.als_alpha,
                           options.als_iterations, options.seed)
    known = [i for i, item in enumerate(data.item_ids) if item in content]
    if known:
        content_matrix = np.stack([content[data.item_ids[i]] for i in known])
        content_map = fit_ridge_map(content_matrix, item_factors[known], lam=1.0)
    else:
        content_map = np.zeros((0, factors), dtype=np.float32)
    return registry.Artifacts(item_ids=list(data.item_ids), factors=item_factors,
                              gram=(item_factors.T @ item_factors).astype(np.float32), content_map=content_map,
                              neighbours=positive.tocsr(), negatives=negative.tocsr())


def gate(metrics: dict[str, Any], serving: registry.ModelInfo | None, tolerance: float) -> tuple[bool, str]:
    """First model: must beat popularity on both held-out slices. Later: its objective may not fall more
    than `tolerance` (relative) below the serving model's."""
    slices = [k.split("_", 1)[1] for k in metrics if k.startswith("ndcg@10_")]
    if serving is None or "objective" not in serving.info.get("metrics", {}):
        losing = [s for s in slices if metrics[f"ndcg@10_{s}"] <= metrics[f"popularity_ndcg@10_{s}"]]
        if losing:
            return False, f"does not beat popularity on held-out slice(s) {losing}"
        return True, "beats popularity on every held-out slice"
    previous = float(serving.info["metrics"]["objective"])
    if metrics["objective"] < previous * (1.0 - tolerance):
        return False, (f"objective {metrics['objective']:.4f} is more than {tolerance:.0%} below the serving "
                       f"model {serving.version} ({previous:.4f})")
    return True, f"objective {metrics['objective']:.4f} against the serving model's {previous:.4f}"


def due(es: Elasticsearch, settings: Settings, min_new_events: int) -> tuple[bool, str]:
    """Whether enough events arrived since the serving model (or any, before the first) to train again."""
    count = int(es.count(index=alias_name(settings, "events"))["count"])
    pointer = registry.read_pointer(es, settings)
    info = registry.load_model(es, settings, pointer.version) if pointer.version else None
    trained_on = int(info.info.get("events", 0)) if info else 0
    if count - trained_on < min_new_events:
        return False, f"{count - trained_on} new events since the serving model; {min_new_events} needed"
    return True, f"{count - trained_on} new events"


def train(es: Elasticsearch, settings: Settings, options: TrainOptions | None = None,
          progress: Progress | None = None,
          promote: Callable[[int], dict[str, Any]] | None = None) -> TrainResult:
    """One training run, end to end. `promote(version)` writes and flips the model when it passes the
    gate (indexer.promotion.promote; left out, the model is saved as a candidate only)."""
    options = options or TrainOptions()
    started = time.perf_counter()
    data = read_histories(es, settings)
    if data.events < options.min_events:
        return TrainResult(None, "skipped", {"events": data.events},
                           f"{data.events} events; at least {options.min_events} are needed")
    if progress:
        progress("read events", 0.1)
    content, catalog_popularity = item_catalog(es, settings)
    popularity = np.asarray([catalog_popularity.get(item, 0.0) for item in data.item_ids])
    if not popularity.any():
        popularity = np.asarray(data.item_counts(), dtype=np.float64)
    factors = factor_dims(settings)
    holdout = split_holdout(data, seed=options.seed, max_users=options.holdout_users)
    chosen, metrics = choose(holdout, popularity, options, factors, content, settings.half_life_days * 86400.0,
                             progress)
    artifacts = fit_final(data, chosen, options, factors, content)
    version = registry.next_version(es, settings)
    serving = registry.read_pointer(es, settings)
    serving_info = registry.load_model(es, settings, serving.version) if serving.version else None
    passed, reason = gate(metrics, serving_info, options.gate_tolerance)
    info = {"events": data.events, "users": len(data.user_ids), "items": len(data.item_ids),
            "interactions": data.interactions, "holdout_users": len(holdout.slices["next"]),
            "params": chosen, "metrics": metrics, "neighbour_weights": int(artifacts.neighbours.nnz),
            "factors": factors, "train_s": round(time.perf_counter() - started, 2)}
    registry.save_model(es, settings, version, "candidate" if passed else "refused", info,
                        artifacts if passed else None, reason)
    log.info("model %d: %s (%s)", version, "passed" if passed else "refused", reason)
    result = TrainResult(version, "candidate" if passed else "refused", info, reason)
    if passed and options.promote and promote is not None:
        result.info["promotion"] = promote(version)
        result.state = "serving"
    return result
