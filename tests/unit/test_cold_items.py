"""Unit tests for the cold-item experiment's pure parts: choosing the cold items, hiding their events from
a split, and restricting the targets to them (no services needed)."""
from __future__ import annotations

import pytest

from eval.datasets import Interaction
from eval.protocols import choose_cold_items, cold_targets, hide_items, split_leave_last_out, split_ratio


def _interactions(users: int = 30, items: int = 40) -> list[Interaction]:
    # Each user touches a different stretch of the catalog, in time order.
    return [Interaction(f"u{u}", f"i{(u * 3 + j) % items}", float(u * 100 + j), "view" if j % 2 else "like")
            for u in range(users) for j in range(12)]


def test_choose_cold_items_is_seeded_and_sized() -> None:
    events = _interactions()
    interacted = {e.item_id for e in events}
    cold = choose_cold_items(events, 0.1, seed=7)
    assert cold <= interacted
    assert len(cold) == round(0.1 * len(interacted))
    assert choose_cold_items(list(reversed(events)), 0.1, seed=7) == cold  # file order does not matter
    assert choose_cold_items(events, 0.1, seed=8) != cold
    assert choose_cold_items(events, 0.0, seed=7) == set()
    assert len(choose_cold_items(events[:2], 0.1, seed=7)) == 1  # a positive share hides at least one item
    with pytest.raises(ValueError):
        choose_cold_items(events, 1.0, seed=7)


@pytest.mark.parametrize("protocol", ["recbole", "temporal"])
def test_hide_items_removes_every_event_of_a_cold_item(protocol: str) -> None:
    events = _interactions()
    data = split_ratio(events, seed=3) if protocol == "recbole" else split_leave_last_out(events)
    cold = choose_cold_items(events, 0.2, seed=1)
    hidden = hide_items(data, cold)
    for target in ("test", "valid"):
        for user in hidden.train:
            assert not {e.item_id for e in hidden.history(user, target)} & cold
            # Everything else the system saw of the user is still there, in the same order.
            assert hidden.history(user, target) == [e for e in data.history(user, target) if e.item_id not in cold]
    # The targets are whole: a cold item the user went on to choose is still a correct answer.
    assert hidden.test == data.test and hidden.valid == data.valid
    assert not {i for u in hidden.train for i in hidden.train_items(u)} & cold
    assert not set(hidden.popularity()) & cold
    assert hide_items(data, set()) is data


def test_cold_targets_restrict_and_skip_users_without_cold_items() -> None:
    relevant = {"a": {"i1", "i2"}, "b": {"i3"}, "c": {"i2", "i4", "i5"}}
    assert cold_targets(relevant, {"i2", "i5"}) == {"a": {"i2"}, "c": {"i2", "i5"}}
    assert cold_targets(relevant, set()) == {}
