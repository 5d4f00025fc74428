"""What a collaborative model is trained on: every user's interaction history read from the events index
(the source of truth), folded with the same rule the live profile uses, and held-out slices to measure it."""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from elasticsearch import Elasticsearch

from indexer.events import scan_events
from indexer.interactions import fold

# RecBole's default test share: the random slice holds out a tenth of each held-out user's items.
RANDOM_SHARE = 0.1

__all__ = ["RANDOM_SHARE", "Holdout", "TrainingData", "histories_from_events", "read_histories", "split_holdout"]


@dataclass
class TrainingData:
    """Users' histories as item indices, oldest first: (item index, weight, ts)."""

    user_ids: list[str]
    item_ids: list[str]
    histories: list[list[tuple[int, float, float]]]
    events: int = 0

    @property
    def interactions(self) -> int:
        return sum(len(h) for h in self.histories)

    def item_counts(self) -> list[int]:
        counts = [0] * len(self.item_ids)
        for history in self.histories:
            for item, _, _ in history:
                counts[item] += 1
        return counts


@dataclass
class Holdout:
    """The training part, and per held-out slice the users' held-out item indices (by user row)."""

    train: TrainingData
    slices: dict[str, dict[int, set[int]]] = field(default_factory=dict)


def _epoch(value: object) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def histories_from_events(events: Iterable[Mapping[str, object]]) -> TrainingData:
    """Fold events (user_id, item_id, weight, ts) per user in time order with the live profile's rule
    (indexer.interactions.record: a repeat keeps the strongest weight, a dislike removes the item)."""
    per_user: dict[str, list[tuple[float, str, float]]] = defaultdict(list)
    count = 0
    for doc in events:
        per_user[str(doc["user_id"])].append((_epoch(doc["ts"]), str(doc["item_id"]), float(doc["weight"])))  # type: ignore[arg-type]
        count += 1
    item_index: dict[str, int] = {}
    user_ids, histories = [], []
    for user in sorted(per_user):
        history = fold(sorted(per_user[user]))
        if not history:
            continue
        rows = [(item_index.setdefault(e.item_id, len(item_index)), e.weight, e.ts) for e in reversed(history)]
        user_ids.append(user)
        histories.append(rows)
    item_ids = [""] * len(item_index)
    for item, index in item_index.items():
        item_ids[index] = item
    return TrainingData(user_ids, item_ids, histories, count)


def read_histories(es: Elasticsearch, settings: object) -> TrainingData:
    """Every user's history from the events index (scan: constant memory on the cluster side)."""
    return histories_from_events(scan_events(es, settings))  # type: ignore[arg-type]


def split_holdout(data: TrainingData, *, seed: int, max_users: int = 5000, min_history: int = 3,
                  random_share: float = RANDOM_SHARE) -> Holdout:
    """Two held-out slices over the users with at least `min_history` items: 'next', the user's newest
    item (what a recommender is asked in production), and 'random', a `random_share` of the other items
    (at least one) drawn at random: interests missing from the history rather than the next one. Several
    items per user keep that slice's mean steady enough to compare settings a percent apart. Both are
    removed from training."""
    rng = random.Random(seed)
    eligible = [row for row, history in enumerate(data.histories) if len(history) >= min_history]
    if len(eligible) > max_users:
        eligible = sorted(rng.sample(eligible, max_users))
    chosen = set(eligible)
    slices: dict[str, dict[int, set[int]]] = {"next": {}, "random": {}}
    histories = []
    for row, history in enumerate(data.histories):
        if row not in chosen:
            histories.append(list(history))
            continue
        newest = len(history) - 1
        # Never all of the older items: the user must keep a history to be scored from.
        count = min(newest - 1, max(1, int(round(random_share * newest))))
        others = set(rng.sample(range(newest), count))
        slices["next"][row] = {history[newest][0]}
        slices["random"][row] = {history[position][0] for position in others}
        histories.append([entry for position, entry in enumerate(history)
                          if position != newest and position not in others])
    train = TrainingData(list(data.user_ids), list(data.item_ids), histories, data.events)
    return Holdout(train, slices)
