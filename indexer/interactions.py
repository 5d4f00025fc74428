"""A user's recent positive interactions (item, weight, time), kept in the profile for the collaborative
retrievers: the item-item query and the latent-factor fold-in read them on every request."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_INTERACTIONS", "Interaction", "decode", "encode", "fold", "record"]

# The long-term item-item retriever sums over the whole kept history, and heavy users' older items still
# count: on MovieLens-100K validation, keeping 100 / 200 / 400 / 1000 items gave item-item NDCG@10 0.198 /
# 0.240 / 0.259 / 0.261 (eval/README.md). 500 keeps nearly all of it at about 20 KB per profile.
MAX_INTERACTIONS = 500


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
