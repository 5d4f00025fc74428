"""The collaborative-filtering maths on plain data: EASE, pruning, the ALS fold-in, the cold-item map."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from indexer.cf_models import (
    fit_als,
    fit_cooccurrence_neighbours,
    fit_ease,
    fit_ridge_map,
    fold_in,
    interaction_matrix,
    prune_rows,
)


def random_interactions(users: int = 300, items: int = 60, seed: int = 1) -> csr_matrix:
    rng = np.random.default_rng(seed)
    # Two taste groups, so there is structure to learn.
    rows = []
    for u in range(users):
        group = u % 2
        pool = np.arange(items // 2) + group * (items // 2)
        chosen = rng.choice(pool, size=rng.integers(3, 12), replace=False)
        rows.append([(int(i), 1.0) for i in chosen])
    return interaction_matrix(rows, items)


def test_interaction_matrix_adds_repeated_items() -> None:
    x = interaction_matrix([[(0, 1.0), (2, 4.0), (0, 1.0)], []], 3)
    assert x.toarray().tolist() == [[2.0, 0.0, 4.0], [0.0, 0.0, 0.0]]


def test_ease_is_the_constrained_least_squares_solution() -> None:
    x = random_interactions()
    lam = 5.0
    b = fit_ease(x, lam)
    assert np.allclose(np.diag(b), 0.0)
    # Stationarity of |X - XB|^2 + lam |B|^2 with diag(B) = 0: off the diagonal,
    # (X^T X + lam I) B - X^T X vanishes; on it, it equals the Lagrange multipliers.
    g = (x.T @ x).toarray().astype(np.float64)
    residual = (g + lam * np.eye(len(g))) @ b.astype(np.float64) - g
    off = residual - np.diag(np.diag(residual))
    assert np.abs(off).max() < 1e-3 * np.abs(g).max()


def test_ease_learns_the_taste_groups() -> None:
    x = random_interactions()
    b = fit_ease(x, 5.0)
    half = b.shape[0] // 2
    within = b[:half, :half].sum() + b[half:, half:].sum()
    across = b[:half, half:].sum() + b[half:, :half].sum()
    assert within > 10 * abs(across)


def test_prune_rows_keeps_the_k_strongest_positive_weights() -> None:
    b = np.array([[0.0, 0.5, -1.0, 0.2, 0.9], [0.3, 0.0, 0.1, -0.2, 0.0]], dtype=np.float32)
    pruned = prune_rows(b, 2).matrix.toarray()
    assert pruned.tolist() == [[0.0, 0.5, 0.0, 0.0, pytest.approx(0.9)],
                               [pytest.approx(0.3), 0.0, pytest.approx(0.1), 0.0, 0.0]]
    # What each target item j stores: its column, {source i: B[i, j]}.
    columns = prune_rows(b, 2).matrix.tocsc()
    per_target = [dict(zip(columns[:, j].indices.tolist(), columns[:, j].data.tolist(), strict=True)) for j in range(5)]
    assert set(per_target[4]) == {0} and set(per_target[0]) == {1} and per_target[2] == {1: pytest.approx(0.1)}


def test_cooccurrence_neighbours_prefer_items_bought_together() -> None:
    x = random_interactions()
    nb = fit_cooccurrence_neighbours(x, k=5).matrix.toarray()
    half = nb.shape[0] // 2
    assert (nb[:half, half:] > 0).sum() == 0 and (nb[:half, :half] > 0).sum() == half * 5


def test_fold_in_reproduces_the_users_als_factor() -> None:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    x = random_interactions(seed=3)
    x.data[:] = np.where(np.arange(x.nnz) % 3 == 0, 4.0, 1.0)  # mixed weights exercise the confidence term
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=8, regularization=0.1, alpha=2.0, iterations=6, random_state=0)
        model.fit(x, show_progress=False)
    y = np.asarray(model.item_factors, dtype=np.float32)
    gram = y.T @ y
    for user in (0, 7, 42):
        row = x.getrow(user)
        u = fold_in(y[row.indices], gram, row.data.tolist(), regularization=0.1, alpha=2.0)
        # ALS ends on an item half-iteration, so the stored user factor is one step stale: compare the
        # rankings the two give, which is what serving uses.
        stored = np.asarray(model.user_factors[user])
        assert np.corrcoef(y @ u, y @ stored)[0, 1] > 0.98


def test_fit_als_returns_item_factors() -> None:
    y = fit_als(random_interactions(), factors=8, regularization=0.1, alpha=1.0, iterations=3, seed=0)
    assert y.shape == (60, 8) and y.dtype == np.float32 and np.isfinite(y).all()


def test_ridge_map_recovers_a_linear_relation() -> None:
    rng = np.random.default_rng(0)
    content = rng.normal(size=(200, 12)).astype(np.float32)
    true_map = rng.normal(size=(12, 4)).astype(np.float32)
    w = fit_ridge_map(content, content @ true_map, lam=1e-3)
    assert np.abs(w - true_map).max() < 1e-2
