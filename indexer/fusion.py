"""Fusion of ranked lists from several retrievers (RRF, weighted linear) and the popularity prior."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

__all__ = [
    "FUSION_DEPTH", "POPULARITY_SOURCE", "FusedHit", "Hit", "Normalization", "Ranking", "SourceContribution",
    "apply_popularity_prior", "fuse_linear", "fuse_rrf", "normalize_minmax", "normalize_zscore"
]

# How deep each retriever's list is when fusion is linear (its scores are normalised over the list), in
# the engine and in the offline scoring that chooses a model's fusion weights alike.
FUSION_DEPTH = 50

POPULARITY_SOURCE = "popularity"
"""Name under which apply_popularity_prior records its contribution in FusedHit.sources."""

Normalization = Literal["minmax", "zscore"]


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved document: its id and the retriever's raw score."""

    id: str
    score: float


Ranking = Sequence[Hit]
"""Hits of one retriever, best first."""


class SourceContribution(NamedTuple):
    """What one retriever said about a fused hit, and how much that added to its fused score. (A named
    tuple: fusion builds one per hit per retriever on every request, and a frozen dataclass costs several
    times more to construct.)"""

    rank: int
    score: float
    normalized: float | None
    contribution: float


@dataclass(slots=True)
class FusedHit:
    """A fused result; score is the sum of the contributions in sources."""

    id: str
    score: float
    sources: dict[str, SourceContribution] = field(default_factory=dict)


def fuse_rrf(
    rankings: Mapping[str, Ranking],
    *,
    k: int = 60,
    weights: Mapping[str, float] | None = None,
) -> list[FusedHit]:
    """Weighted reciprocal rank fusion: each source adds weight / (k + rank) for every hit it returned.

    Only ranks matter, so retrievers with incomparable score scales (BM25, cosine) mix without tuning.
    A source missing from ``weights`` has weight 1.0. Raw scores are kept in the result for explain.
    """
    if k < 1:
        raise ValueError(f"RRF k must be >= 1, got {k}")
    resolved = _resolve_weights(rankings, weights)
    per_doc: dict[str, dict[str, SourceContribution]] = {}
    for source, ranking in rankings.items():
        weight = resolved[source]
        for rank, hit in enumerate(_dedupe(ranking), start=1):
            per_doc.setdefault(hit.id, {})[source] = SourceContribution(
                rank=rank, score=hit.score, normalized=None, contribution=weight / (k + rank)
            )
    return _assemble(per_doc)


def normalize_minmax(scores: Sequence[float]) -> list[float]:
    """Scale scores linearly onto [0, 1] (best 1.0, worst 0.0).

    With a single score, or when all scores are equal, every score maps to 1.0: the retriever found
    these documents and ranked them equally, so they all get full credit rather than none.
    """
    if not scores:
        return []
    low, high = min(scores), max(scores)
    spread = high - low
    if spread <= 0.0:
        return [1.0] * len(scores)
    return [(s - low) / spread for s in scores]


def normalize_zscore(scores: Sequence[float]) -> list[float]:
    """Standardise scores to mean 0 and (population) standard deviation 1.

    With a single score, or when all scores are equal, every score maps to 0.0: there is no spread,
    so the retriever carries no information about which of its documents is better.
    """
    if not scores:
        return []
    n = len(scores)
    mean = math.fsum(scores) / n
    std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / n)
    if std <= 0.0:
        return [0.0] * n
    return [(s - mean) / std for s in scores]


_NORMALIZERS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "minmax": normalize_minmax,
    "zscore": normalize_zscore,
}


def fuse_linear(
    rankings: Mapping[str, Ranking],
    *,
    weights: Mapping[str, float] | None = None,
    normalization: Normalization = "minmax",
) -> list[FusedHit]:
    """Weighted sum of per-source normalised scores.

    A document a source did not return gets nothing from that source (contribution 0, and no entry in
    ``sources``): it is treated as no better than the worst document the source did return.

    - minmax: the worst returned document normalises to 0.0, so "missing" and "worst" coincide.
    - zscore: raw z-scores are centred on the mean, so a missing document scored 0 would beat every
      below-average document the source actually returned. Instead a missing document is treated as
      having the source's minimum z-score. That is implemented by shifting the source's z-scores so
      its minimum is 0 (``normalized`` holds the shifted value); the shift is the same for every
      document, so the order and the score gaps are exactly those of the "missing = minimum" rule,
      and missing documents still contribute exactly 0.

    Scores must be finite. A source missing from ``weights`` has weight 1.0.
    """
    normalizer = _NORMALIZERS.get(normalization)
    if normalizer is None:
        raise ValueError(f"unknown normalization {normalization!r}; expected one of {sorted(_NORMALIZERS)}")
    resolved = _resolve_weights(rankings, weights)
    per_doc: dict[str, dict[str, SourceContribution]] = {}
    for source, ranking in rankings.items():
        hits = _dedupe(ranking)
        raw = [hit.score for hit in hits]
        if not all(math.isfinite(s) for s in raw):
            raise ValueError(f"source {source!r} has a non-finite score; linear fusion needs finite scores")
        normalized = normalizer(raw)
        if normalization == "zscore" and normalized:
            floor = min(normalized)
            normalized = [z - floor for z in normalized]
        weight = resolved[source]
        for rank, (hit, norm) in enumerate(zip(hits, normalized, strict=True), start=1):
            per_doc.setdefault(hit.id, {})[source] = SourceContribution(
                rank=rank, score=hit.score, normalized=norm, contribution=weight * norm
            )
    return _assemble(per_doc)


def apply_popularity_prior(
    hits: list[FusedHit], popularity: Mapping[str, float], weight: float
) -> list[FusedHit]:
    """Add a popularity bonus in [0, weight] to each hit and re-sort; the input is not modified.

    bonus = weight * log1p(max(pop, 0)) / log1p(max_pop), with max_pop the largest value in
    ``popularity`` (pass catalog-wide values for a request-independent scale, or only the hits' own).
    The log damps the head of the distribution so a blockbuster cannot drown relevance. An id missing
    from ``popularity`` counts as 0. The bonus is recorded as source "popularity" (rank = position by
    popularity among ``hits``, score = raw popularity) so the fused score still adds up.
    """
    if not math.isfinite(weight) or weight < 0.0:
        raise ValueError(f"popularity weight must be a finite number >= 0, got {weight}")
    if any(not math.isfinite(p) for p in popularity.values()):
        raise ValueError("popularity values must be finite")
    if any(POPULARITY_SOURCE in hit.sources for hit in hits):
        raise ValueError(f"hits already carry a {POPULARITY_SOURCE!r} source; the prior was applied twice")
    max_pop = max((max(p, 0.0) for p in popularity.values()), default=0.0)
    denominator = math.log1p(max_pop)
    raw = {hit.id: popularity.get(hit.id, 0.0) for hit in hits}
    by_popularity = sorted(raw, key=lambda doc_id: (-raw[doc_id], doc_id))
    pop_rank = {doc_id: rank for rank, doc_id in enumerate(by_popularity, start=1)}

    per_doc: dict[str, dict[str, SourceContribution]] = {}
    for hit in hits:
        norm = math.log1p(max(raw[hit.id], 0.0)) / denominator if denominator > 0.0 else 0.0
        sources = dict(hit.sources)
        sources[POPULARITY_SOURCE] = SourceContribution(
            rank=pop_rank[hit.id], score=raw[hit.id], normalized=norm, contribution=weight * norm
        )
        per_doc[hit.id] = sources
    return _assemble(per_doc)


def _resolve_weights(rankings: Mapping[str, Ranking], weights: Mapping[str, float] | None) -> dict[str, float]:
    # Weights for sources absent from this request are allowed: a configured retriever may simply
    # not have run (no query text means no query_knn list).
    given = weights or {}
    for source, w in given.items():
        if not math.isfinite(w) or w < 0.0:
            raise ValueError(f"weight for source {source!r} must be a finite number >= 0, got {w}")
    return {source: float(given.get(source, 1.0)) for source in rankings}


def _dedupe(ranking: Ranking) -> list[Hit]:
    # A retriever should not return an id twice; if one does, its best (first) position is the one
    # that counts, so a duplicate cannot double a document's share.
    seen: set[str] = set()
    unique: list[Hit] = []
    for hit in ranking:
        if hit.id not in seen:
            seen.add(hit.id)
            unique.append(hit)
    return unique


def _assemble(per_doc: Mapping[str, dict[str, SourceContribution]]) -> list[FusedHit]:
    fused = [
        FusedHit(id=doc_id, score=sum(c.contribution for c in sources.values()), sources=sources)
        for doc_id, sources in per_doc.items()
    ]
    fused.sort(key=_sort_key)
    return fused


def _sort_key(hit: FusedHit) -> tuple[float, int, str]:
    # Ties go to the document some retriever placed highest, then to the id, so equal inputs always
    # give the same page; the prior's own rank is not a retrieval signal and is left out.
    ranks = [c.rank for name, c in hit.sources.items() if name != POPULARITY_SOURCE]
    best_rank = min(ranks) if ranks else 2**31
    return (-hit.score, best_rank, hit.id)
