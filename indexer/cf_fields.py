"""The collaborative fields of an item document, in two slots (a, b): the slot that serves and the slot the
next model is written into: field names and their values for one item; no IO."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["CF_FIELDS", "SLOTS", "factors_field", "model_field", "neighbours_field", "slot_fields"]

SLOTS = ("a", "b")


def model_field(slot: str) -> str:
    return f"cf_{slot}_model"


def neighbours_field(slot: str) -> str:
    return f"cf_{slot}_neighbours"


def factors_field(slot: str) -> str:
    return f"cf_{slot}_factors"


CF_FIELDS = tuple(name(slot) for slot in SLOTS for name in (model_field, neighbours_field, factors_field))


def slot_fields(slot: str, version: int, factors: np.ndarray | None,
                neighbours: Mapping[str, float] | None) -> dict[str, Any]:
    """One item's fields for one model: its factor vector (learned, or mapped from its content) and the
    weights B[i, this item] of the source items i whose strongest neighbours include it."""
    doc: dict[str, Any] = {model_field(slot): version}
    if factors is not None:
        doc[factors_field(slot)] = [float(x) for x in factors]
    if neighbours:
        # The token is the source item's id as it is: the field takes any string up to 32,766 bytes as a
        # feature name (dots included), and item ids are far shorter.
        doc[neighbours_field(slot)] = {source: float(weight) for source, weight in neighbours.items()}
    return doc
