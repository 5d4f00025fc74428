"""The dense EASE reference (Steck 2019), computed here in plain numpy, outside hybridrec's serving path:
what the item-item model would score with every weight kept, negative ones included."""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from eval.metrics import ndcg_at_k

__all__ = ["LAMBDAS", "EaseReference", "select_ease"]

LAMBDAS = (100.0, 300.0, 1000.0)


class EaseReference:
    def __init__(self, histories: Mapping[str, Collection[str]], item_ids: Sequence[str], lam: float) -> None:
        self.lam = lam
        self.item_ids = list(item_ids)
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.users = {user: sorted({self.index[i] for i in items if i in self.index})
                      for user, items in histories.items()}
        x = np.zeros((len(self.users), len(self.item_ids)))
        for row, items in enumerate(self.users.values()):
            x[row, items] = 1.0
        gram = x.T @ x + lam * np.eye(len(self.item_ids))
        inverse = np.linalg.inv(gram)
        self.b = inverse / (-np.diag(inverse))
        np.fill_diagonal(self.b, 0.0)

    def recommend(self, user_id: str, exclude: Collection[str], k: int) -> list[str]:
        scores = self.b[self.users.get(user_id, [])].sum(axis=0)
        scores[[self.index[i] for i in exclude if i in self.index]] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        return [self.item_ids[i] for i in top if np.isfinite(scores[i])]


def select_ease(train: Mapping[str, Collection[str]], valid: Mapping[str, Collection[str]],
                item_ids: Sequence[str], k: int = 10) -> tuple[float, list[dict[str, float]]]:
    """The lambda with the best validation NDCG@k (fit on train, validation items ranked)."""
    grid = []
    for lam in LAMBDAS:
        model = EaseReference(train, item_ids, lam)
        users = [u for u in train if valid.get(u)]
        score = float(np.mean([ndcg_at_k(model.recommend(u, train[u], k), set(valid[u]), k) for u in users]))
        grid.append({"lambda": lam, f"valid_ndcg@{k}": round(score, 4)})
    best = max(grid, key=lambda row: row[f"valid_ndcg@{k}"])
    return best["lambda"], grid
