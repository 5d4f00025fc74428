"""Evaluation protocols: RecBole's random 8:1:1 split per user and a temporal leave-last-out split."""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from eval.datasets import Interaction

__all__ = ["PROTOCOLS", "Split", "choose_cold_items", "cold_targets", "group_by_user", "hide_items", "ratio_counts",
           "split", "split_leave_last_out", "split_ratio"]

PROTOCOLS = ("recbole", "temporal")


@dataclass
class Split:
    """Per user: training events (what the profile is built from), validation and test items."""

    protocol: str
    train: dict[str, list[Interaction]] = field(default_factory=dict)
    valid: dict[str, list[str]] = field(default_factory=dict)
    test: dict[str, list[str]] = field(default_factory=dict)
    valid_events: dict[str, list[Interaction]] = field(default_factory=dict)

    def history(self, user_id: str, target: str) -> list[Interaction]:
        """What the system has seen of a user when `target` items are asked for: the training events,
        and the validation events too when the test items are the target (RecBole masks both)."""
        events = list(self.train.get(user_id, []))
        if target == "test":
            events += self.valid_events.get(user_id, [])
        return events

    def train_items(self, user_id: str) -> list[str]:
        return list(dict.fromkeys(e.item_id for e in self.train.get(user_id, [])))

    def popularity(self) -> Counter[str]:
        """Training users per item: the popularity the popularity strategy may know about."""
        return Counter(item for user in self.train for item in self.train_items(user))


def group_by_user(interactions: Iterable[Interaction]) -> dict[str, dict[str, list[Interaction]]]:
    """user -> item -> that user's events on the item, items in order of the first event.

    The unit a split moves is the (user, item) pair: a view and a later purchase of one item must land
    on the same side, or the test item would already be in the profile.
    """
    users: dict[str, dict[str, list[Interaction]]] = defaultdict(dict)
    for event in sorted(interactions, key=lambda e: e.ts):  # stable: equal timestamps keep file order
        users[event.user_id].setdefault(event.item_id, []).append(event)
    return dict(users)


def ratio_counts(total: int, ratios: Sequence[float]) -> list[int]:
    """How many of `total` items go to each part, exactly as RecBole's split_by_ratio counts them.

    Each later part gets floor(ratio * total), the first part the rest; then a later part whose share
    is between 0 and 1 item takes one item from the first part, as long as the first keeps more than one.
    """
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def split_ratio(interactions: Iterable[Interaction], ratios: Sequence[float] = (0.8, 0.1, 0.1),
                seed: int = 2020) -> Split:
    """RecBole's default: each user's items shuffled (seeded) and cut train:valid:test by ratio."""
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-9 or min(ratios) < 0:
        raise ValueError(f"ratios must be three non-negative shares summing to 1, got {ratios}")
    rng = np.random.default_rng(seed)
    out = Split("recbole")
    users = group_by_user(interactions)
    for user_id in sorted(users):
        items = list(users[user_id])
        order = [items[i] for i in rng.permutation(len(items))]
        n_train, n_valid, _ = ratio_counts(len(order), ratios)
        train = set(order[:n_train])
        out.train[user_id] = [e for item in items if item in train for e in users[user_id][item]]
        out.valid[user_id] = order[n_train:n_train + n_valid]
        out.valid_events[user_id] = [e for item in out.valid[user_id] for e in users[user_id][item]]
        out.test[user_id] = order[n_train + n_valid:]
    return out


def split_leave_last_out(interactions: Iterable[Interaction]) -> Split:
    """Each user's newest item (by first event) is the test, the one before it validation, the rest train.

    A user with one item has only a test item, with two a validation and a test item; such users have
    no profile and are left out of the evaluation.
    """
    out = Split("temporal")
    users = group_by_user(interactions)
    for user_id in sorted(users):
        items = list(users[user_id])
        out.train[user_id] = [e for item in items[:-2] for e in users[user_id][item]]
        out.valid[user_id] = items[-2:-1]
        out.valid_events[user_id] = [e for item in out.valid[user_id] for e in users[user_id][item]]
        out.test[user_id] = items[-1:]
    return out


def split(protocol: str, interactions: Sequence[Interaction], seed: int = 2020) -> Split:
    """Apply the named protocol ("recbole" or "temporal")."""
    if protocol == "recbole":
        return split_ratio(interactions, seed=seed)
    if protocol == "temporal":
        return split_leave_last_out(interactions)
    raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")


# -- the cold-item experiment ------------------------------------------------------------------------------
def choose_cold_items(interactions: Iterable[Interaction], fraction: float, seed: int) -> set[str]:
    """A seeded random `fraction` of the items that have any interaction (rounded, at least one when the
    fraction is above 0): the items whose every interaction the system is never shown.

    Drawn among interacted items only, so the share means the same whatever the catalog holds besides;
    sorted ids first, so the draw depends on the seed and the data, not on file order."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the cold-item fraction must be in [0, 1), got {fraction}")
    items = sorted({e.item_id for e in interactions})
    if fraction == 0.0 or not items:
        return set()
    n = min(len(items) - 1, max(1, round(fraction * len(items))))
    rng = np.random.default_rng(seed)
    return {items[i] for i in rng.choice(len(items), size=n, replace=False)}


def hide_items(data: Split, hidden: Collection[str]) -> Split:
    """The split with every event on a hidden item removed from what the system may see (the training
    events and the validation events that become history when test is scored). The validation and test
    item lists are kept whole: a hidden item a user went on to choose is still a correct answer."""
    hidden = set(hidden)
    if not hidden:
        return data
    return Split(data.protocol,
                 train={u: [e for e in events if e.item_id not in hidden] for u, events in data.train.items()},
                 valid={u: list(items) for u, items in data.valid.items()},
                 test={u: list(items) for u, items in data.test.items()},
                 valid_events={u: [e for e in events if e.item_id not in hidden]
                               for u, events in data.valid_events.items()})


def cold_targets(relevant: Mapping[str, Collection[str]], cold: Collection[str]) -> dict[str, set[str]]:
    """Each user's relevant items restricted to the cold ones; users left with none are dropped."""
    cold = set(cold)
    out = {u: set(items) & cold for u, items in relevant.items()}
    return {u: items for u, items in out.items() if items}
