"""The strategies compared side by side, as ReadParams for the real engine (or popularity / ALS)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LINEAR_W_BM25", "LINEAR_W_USER", "MAX_QUERY_CHARS", "Strategy", "default_strategies", "history_text"]

MAX_QUERY_CHARS = 1000  # ReadParams.q's limit

# Linear fusion adds min-max normalised scores, so the weights are each source's share of the fused
# score. Equal weights, checked on the validation split of ML-100K (never on test) against
# w_bm25 in {0.1, 0.3, 2.0} with w_user = 1: BM25 over the history's titles is as strong as the user
# vector there, so 0.1-0.3 scored clearly lower, and 2.0 was within noise of 1.0 (eval/README.md).
LINEAR_W_USER = 1.0
LINEAR_W_BM25 = 1.0


@dataclass(frozen=True)
class Strategy:
    """One row of the table. kind "engine" goes through indexer.recommender.Recommender with `params`."""

    name: str
    kind: Literal["popularity", "engine", "als", "ease"]
    params: Mapping[str, Any] = field(default_factory=dict)
    history_query: bool = False  # send the user's recent history titles as q

    def describe(self) -> str:
        if self.kind != "engine":
            return self.kind
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"engine({shown}{', q=history titles' if self.history_query else ''})"


# The content rows keep the collaborative retrievers and the prior off explicitly: left out, those
# parameters take the serving model's learned values.
CONTENT_ONLY = {"w_item": 0.0, "w_recent": 0.0, "w_cf": 0.0, "popularity_weight": 0.0}


def default_strategies(linear_w_bm25: float = LINEAR_W_BM25, linear_w_user: float = LINEAR_W_USER,
                       als: bool = True) -> list[Strategy]:
    """Popularity; the content strategies (BM25 only, vector only, hybrid RRF, hybrid linear); the
    collaborative retrievers alone (item-item, latent); the default (no parameters: the serving model's
    learned fusion); and the references computed outside the serving path (dense EASE, ALS).

    A weight of 0 switches a source off in the engine. No strategy uses the query-vector kNN: the
    query here is a bag of titles, whose embedding only restates the user vector at the cost of one
    encoder call per request. Both content hybrids use the same two sources, so they differ only in fusion.
    """
    out = [
        Strategy("popularity", "popularity"),
        Strategy("bm25", "engine", {"w_bm25": 1.0, "w_user": 0.0, "w_query": 0.0, **CONTENT_ONLY},
                 history_query=True),
        Strategy("vector", "engine", {"w_bm25": 0.0, "w_user": 1.0, "w_query": 0.0, **CONTENT_ONLY}),
        Strategy("hybrid-rrf", "engine", {"fusion": "rrf", "w_bm25": 1.0, "w_user": 1.0, "w_query": 0.0,
                                          **CONTENT_ONLY}, history_query=True),
        Strategy("hybrid-linear", "engine", {"fusion": "linear", "normalization": "minmax",
                                             "w_bm25": linear_w_bm25, "w_user": linear_w_user, "w_query": 0.0,
                                             **CONTENT_ONLY}, history_query=True),
        Strategy("item-item", "engine", {"w_bm25": 0.0, "w_user": 0.0, "w_query": 0.0, "w_item": 1.0,
                                         "w_recent": 0.0, "w_cf": 0.0, "popularity_weight": 0.0}),
        Strategy("item-recent", "engine", {"w_bm25": 0.0, "w_user": 0.0, "w_query": 0.0, "w_item": 0.0,
                                           "w_recent": 1.0, "w_cf": 0.0, "popularity_weight": 0.0}),
        Strategy("latent", "engine", {"w_bm25": 0.0, "w_user": 0.0, "w_query": 0.0, "w_item": 0.0,
                                      "w_recent": 0.0, "w_cf": 1.0, "popularity_weight": 0.0}),
        Strategy("default", "engine", {}),
        Strategy("ease-dense", "ease"),
    ]
    if als:
        out.append(Strategy("als", "als"))
    return out


def history_text(titles: Sequence[str], limit: int = MAX_QUERY_CHARS) -> str:
    """Titles newest first, joined, cut at a title boundary so that the text fits in `limit` characters."""
    text = ""
    for title in titles:
        title = " ".join(title.split())
        candidate = f"{text}; {title}" if text else title
        if len(candidate) > limit:
            break
        text = candidate
    # A single title longer than the limit still yields a query, cut at a word boundary.
    if not text and titles:
        text = " ".join(titles[0].split())[:limit].rsplit(" ", 1)[0]
    return text
