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

    The runtime changes are the shard and replica counts (HYBRIDREC_ES_SHARDS, HYBRIDREC_ES_REPLICAS) and
    the item vector's HNSW quantisation (HYBRIDREC_VECTOR_INDEX_TYPE); everything else is the JSON file as
    written.
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")
    body = copy.deepcopy(_read(kind))
    index_settings = body.setdefault("settings", {})
    index_settings["number_of_shards"] = settings.es_shards
    if settings.es_replicas is not None:
        # A fixed count replaces the files' auto-expand range, which would override it.
        index_settings.pop("auto_expand_replicas", None)
        index_settings["number_of_replicas"] = settings.es_replicas
    if kind == "items":
        options = body["mappings"]["properties"]["embedding"]["index_options"]
        options["type"] = settings.vector_index_type
    return body

