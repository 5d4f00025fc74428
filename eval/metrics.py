"""Top-K ranking metrics (RecBole's definitions), catalog coverage and latency percentiles: pure functions."""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "KS", "RANKING_METRICS", "coverage", "hit_at_k", "mean_rows", "mrr_at_k", "ndcg_at_k", "paired_difference",
    "precision_at_k", "ranking_metrics", "recall_at_k",
]

KS: tuple[int, ...] = (10, 20)
RANKING_METRICS: tuple[str, ...] = ("recall", "ndcg", "mrr", "hit", "precision")


def _top(ranked: Sequence[str], k: int) -> list[str]:
    # A retriever should never return an item twice; if one does, the copy must not count as a second hit.
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return list(dict.fromkeys(ranked))[:k]


def _hits(ranked: Sequence[str], relevant: Collection[str], k: int) -> list[bool]:
    return [doc_id in relevant for doc_id in _top(ranked, k)]


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant items found in the top k (0 when nothing is relevant)."""
    return sum(_hits(ranked, relevant, k)) / len(relevant) if relevant else 0.0


def precision_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Hits in the top k divided by k, even when the list is shorter (as RecBole does)."""
    return sum(_hits(ranked, relevant, k)) / k


def hit_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """1.0 when any relevant item is in the top k, else 0.0."""
    return 1.0 if any(_hits(ranked, relevant, k)) else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Reciprocal rank (1-based) of the first relevant item in the top k, 0.0 when there is none."""
    for rank, hit in enumerate(_hits(ranked, relevant, k), start=1):
        if hit:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Binary-gain NDCG: DCG of the top k over the DCG of an ideal list holding min(|relevant|, k) hits."""
    if not relevant:
        return 0.0
    dcg = sum(1.0 / np.log2(rank + 1) for rank, hit in enumerate(_hits(ranked, relevant, k), start=1) if hit)
    ideal = sum(1.0 / np.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return float(dcg / ideal)


_FUNCTIONS = {"recall": recall_at_k, "ndcg": ndcg_at_k, "mrr": mrr_at_k, "hit": hit_at_k,
              "precision": precision_at_k}


def ranking_metrics(ranked: Sequence[str], relevant: Collection[str], ks: Iterable[int] = KS) -> dict[str, float]:
    """Every ranking metric at every k for one user, keyed like "ndcg@10"."""
    return {f"{name}@{k}": fn(ranked, relevant, k) for k in ks for name, fn in _FUNCTIONS.items()}


def mean_rows(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-key mean over users (every row must carry the same keys); empty input gives {}."""
    if not rows:
        return {}
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def coverage(lists: Iterable[Sequence[str]], catalog_size: int, k: int) -> float:
    """Share of the catalog that appears in at least one user's top k."""
    if catalog_size <= 0:
        raise ValueError(f"catalog_size must be > 0, got {catalog_size}")
    shown: set[str] = set()
    for ranked in lists:
        shown.update(_top(ranked, k))
    return len(shown) / catalog_size


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean of a - b over paired per-user values, with a normal-approximation 95% interval.

    Two strategies scored on the same users differ by less noise than their separate means suggest;
    an interval that contains 0 says the table cannot tell them apart.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    if not a:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    half = 1.96 * float(np.std(diff, ddof=1)) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    mean = float(np.mean(diff))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diff)}
