"""The collaborative-filtering reference: implicit's ALS on the same training split, tuned on validation."""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from eval.metrics import ndcg_at_k
from eval.protocols import Split

__all__ = ["GRID", "AlsConfig", "AlsModel", "select_als"]


@dataclass(frozen=True)
class AlsConfig:
    factors: int
    regularization: float
    alpha: float
    iterations: int = 15

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Small on purpose: a fit on ML-100K takes about a second on two cores, and RecBole's published
# baselines are tuned too, so an untuned reference would flatter the content strategies.
GRID: tuple[AlsConfig, ...] = tuple(AlsConfig(f, r, a) for f in (32, 64, 128) for r in (0.01, 0.1)
                                    for a in (1.0, 10.0))


class AlsModel:
    """ALS fitted on the training items of every user (binary implicit feedback, as BPR sees ML-100K)."""

    def __init__(self, split: Split, item_ids: Sequence[str], config: AlsConfig, seed: int = 2020) -> None:
        from implicit.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.config = config
        self.item_ids = list(item_ids)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.user_ids = sorted(u for u in split.train if split.train[u])
        self.user_index = {user: i for i, user in enumerate(self.user_ids)}
        self.train = self._matrix([split.train_items(u) for u in self.user_ids])
        # implicit runs its own threads; a multi-threaded BLAS underneath oversubscribes the cores.
        with threadpool_limits(1, "blas"):
            self.model = AlternatingLeastSquares(factors=config.factors, regularization=config.regularization,
                                                 alpha=config.alpha, iterations=config.iterations,
                                                 random_state=seed)
            self.model.fit(self.train, show_progress=False)

    def _matrix(self, rows: Sequence[Collection[str]]) -> csr_matrix:
        indptr, indices = [0], []
        for items in rows:
            indices.extend(sorted({self.item_index[i] for i in items if i in self.item_index}))
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float32)
        return csr_matrix((data, indices, indptr), shape=(len(rows), len(self.item_ids)))

    def recommend(self, user_id: str, exclude: Collection[str], k: int) -> list[str]:
        """Top k items for one training user, never any of `exclude`."""
        row = self._matrix([exclude])
        ids, _ = self.model.recommend(self.user_index[user_id], row, N=k, filter_already_liked_items=True)
        return [self.item_ids[int(i)] for i in ids if i >= 0]

    def recommend_all(self, k: int) -> dict[str, list[str]]:
        """Top k for every training user with only their training items excluded (one batched call)."""
        ids, _ = self.model.recommend(np.arange(len(self.user_ids)), self.train, N=k,
                                      filter_already_liked_items=True)
        return {user: [self.item_ids[int(i)] for i in row if i >= 0]
                for user, row in zip(self.user_ids, ids, strict=True)}


def select_als(split: Split, item_ids: Sequence[str], grid: Sequence[AlsConfig] = GRID, seed: int = 2020,
               k: int = 10) -> tuple[AlsModel, list[dict[str, Any]]]:
    """The grid's best model by mean validation NDCG@k, and every configuration's score."""
    best: tuple[float, AlsModel] | None = None
    scores = []
    for config in grid:
        model = AlsModel(split, item_ids, config, seed)
        lists = model.recommend_all(k)
        users = [u for u in lists if split.valid.get(u)]
        score = float(np.mean([ndcg_at_k(lists[u], set(split.valid[u]), k) for u in users])) if users else 0.0
        scores.append({**config.as_dict(), f"valid_ndcg@{k}": round(score, 4)})
        if best is None or score > best[0]:
            best = (score, model)
    if best is None:
        raise ValueError("the ALS grid is empty")
    return best[1], scores
