"""Loads index definitions from mappings/*.json, the only source of truth for field definitions."""
from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import mappings
from indexer.settings import Settings

# The mappings package: the source tree's mappings/ or the installed copy (it ships as package data).
MAPPINGS_DIR = Path(mappings.__file__).resolve().parent
INDEX_KINDS = ("items", "events", "users", "reco_logs", "models")


@cache
def _read(kind: str) -> dict[str, Any]:
    path = MAPPINGS_DIR / f"{kind}.json"  # kinds use '_', index and alias names '-'  (reco_logs -> reco-logs)
    with path.open(encoding="utf-8") as fh:
        definition: dict[str, Any] = json.load(fh)
    return definition


def index_definition(kind: str, settings: Settings) -> dict[str, Any]:
    """The `settings` and `mappings` bodies for a new index of this kind.

    The only runtime change is the item vector's HNSW quantisation, a setting
    (HYBRIDREC_VECTOR_INDEX_TYPE); everything else is the JSON file as written.
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")
    body = copy.deepcopy(_read(kind))
    if kind == "items":
        options = body["mappings"]["properties"]["embedding"]["index_options"]
        options["type"] = settings.vector_index_type
    return body

