"""Result-list diversity: maximal marginal relevance re-ranking and intra-list diversity."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from indexer.fusion import normalize_minmax

__all__ = ["intra_list_diversity", "mmr"]

Vector = npt.NDArray[Any]


def mmr(
    candidates: Sequence[str],
    relevance: Mapping[str, float],
    vectors: Mapping[str, Vector],
    *,
    lambda_: float,
    k: int,
) -> list[str]:
    """Pick up to k candidates by maximal marginal relevance.

    Each step takes the candidate maximising ``lambda_ * rel - (1 - lambda_) * max_sim``, where rel is
    the candidate's relevance min-max normalised over ``candidates`` (so BM25-scale and RRF-scale
    scores mix the same way) and max_sim its largest cosine similarity to anything already picked.
    lambda_ = 1 is pure relevance; lower values trade relevance for variety. A candidate without a
    vector has similarity 0 to everything. Ties go to the earlier candidate, so with lambda_ = 1 a
    relevance-sorted list comes back in its own order. Duplicate ids are kept once.
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"MMR lambda_ must be in [0, 1], got {lambda_}")
    if k < 0:
        raise ValueError(f"MMR k must be >= 0, got {k}")
    ids = list(dict.fromkeys(candidates))
    missing = [doc_id for doc_id in ids if doc_id not in relevance]
    if missing:
        raise ValueError(f"no relevance score for candidates {missing[:5]}")
    if k == 0 or not ids:
        return []

    rel = np.asarray(normalize_minmax([float(relevance[doc_id]) for doc_id in ids]), dtype=np.float64)
    matrix = _unit_rows(ids, vectors)
    max_sim = np.zeros(len(ids), dtype=np.float64)
    available = np.ones(len(ids), dtype=bool)
    picked: list[str] = []
    for _ in range(min(k, len(ids))):
        # Nothing picked yet means nothing to be similar to: max_sim stays 0 and the first pick is
        # the most relevant candidate whatever lambda_ is.
        gain = lambda_ * rel - (1.0 - lambda_) * max_sim
        gain[~available] = -np.inf
        best = int(np.argmax(gain))  # argmax returns the first maximum: earlier candidates win ties
        picked.append(ids[best])
        available[best] = False
        np.maximum(max_sim, matrix @ matrix[best], out=max_sim)
    return picked


def intra_list_diversity(ids: Sequence[str], vectors: Mapping[str, Vector]) -> float:
    """Mean pairwise cosine distance (1 - cosine) over the listed items that have vectors.

    Items without a vector are skipped, duplicate ids count once, and fewer than two usable items
    give 0.0 (a list of one has no variety to measure).
    """
    usable = [doc_id for doc_id in dict.fromkeys(ids) if doc_id in vectors]
    if len(usable) < 2:
        return 0.0
    matrix = _unit_rows(usable, vectors)
    sims = matrix @ matrix.T
    rows, cols = np.triu_indices(len(usable), k=1)
    return float(np.mean(1.0 - sims[rows, cols]))


def _unit_rows(ids: Sequence[str], vectors: Mapping[str, Vector]) -> npt.NDArray[np.float64]:
    # Item embeddings are stored normalised, but renormalising is cheap and keeps the similarity a
    # true cosine if a caller passes raw model output. Missing or zero vectors become zero rows,
    # which makes their similarity to everything 0.
    dims = {np.asarray(vectors[doc_id]).shape for doc_id in ids if doc_id in vectors}
    if len(dims) > 1:
        raise ValueError(f"candidate vectors have different shapes: {sorted(dims)}")
    if not dims:
        return np.zeros((len(ids), 1), dtype=np.float64)
    (shape,) = dims
    if len(shape) != 1:
        raise ValueError(f"vectors must be one-dimensional, got shape {shape}")
    matrix = np.zeros((len(ids), shape[0]), dtype=np.float64)
    for row, doc_id in enumerate(ids):
        if doc_id in vectors:
            matrix[row] = np.asarray(vectors[doc_id], dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.divide(matrix, norms, out=matrix, where=norms > 0.0)
    return matrix
