"""A user's recent positive interactions (item, weight, time), kept in the profile for the collaborative
retrievers: the item-item query and the latent-factor fold-in read them on every request."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_INTERACTIONS", "Interaction", "decode", "encode", "fold", "record"]

# The collaborative retrievers weigh the newest events most; 200 covers a long history at a few KB per
# profile (the quality check in eval/README.md found no gain past the newest ~100).
MAX_INTERACTIONS = 200


@dataclass(frozen=True)
class Interaction:
    item_id: str
    weight: float
    ts: float


def record(history: Sequence[Interaction], item_id: str, weight: float, ts: float,
           limit: int = MAX_INTERACTIONS) -> tuple[Interaction, ...]:
    """The history after one event, newest first (by event time, so a late event lands in its place).

    A positive event adds the item, or refreshes it (the stronger weight and the newer time win); a
    negative one (a dislike) removes it: a collaborative model cannot be asked for "less like this",
    so the item simply stops pulling its neighbours in. Only the newest `limit` entries are kept.
    """
    rest = [entry for entry in history if entry.item_id != item_id]
    if weight > 0:
        old = next((entry for entry in history if entry.item_id == item_id), None)
        if old is not None:
            weight, ts = max(weight, old.weight), max(ts, old.ts)
        rest.append(Interaction(item_id, float(weight), float(ts)))
    rest.sort(key=lambda entry: (-entry.ts, entry.item_id))
    return tuple(rest[:limit])


def fold(events: Sequence[tuple[float, str, float]]) -> tuple[Interaction, ...]:
    """The whole history a time-ordered list of (ts, item, weight) events gives, with record()'s rule and
    no length limit, in one pass (training reads millions of events)."""
    current: dict[str, Interaction] = {}
    for ts, item_id, weight in events:
        if weight > 0:
            old = current.pop(item_id, None)
            if old is not None:
                weight, ts = max(weight, old.weight), max(ts, old.ts)
            current[item_id] = Interaction(item_id, float(weight), float(ts))
        else:
            current.pop(item_id, None)
    return tuple(sorted(current.values(), key=lambda entry: (-entry.ts, entry.item_id)))


def encode(history: Sequence[Interaction]) -> bytes:
    return json.dumps([[e.item_id, e.weight, e.ts] for e in history], separators=(",", ":")).encode("utf-8")


def decode(raw: bytes) -> tuple[Interaction, ...]:
    if not raw:
        return ()
    return tuple(Interaction(str(item), float(weight), float(ts)) for item, weight, ts in json.loads(raw))
