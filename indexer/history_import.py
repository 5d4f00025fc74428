"""Importing past interactions: validated events streamed into the events index with ids derived from
their content (importing the same file twice changes nothing), then every profile rebuilt from it."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from elasticsearch import Elasticsearch

from indexer.bulk import batches
from indexer.events import event_document, record_events, validate_events
from indexer.lifecycle import alias_name
from indexer.profile_maintenance import rebuild_profiles
from indexer.settings import Settings

__all__ = ["import_events", "stable_event_id"]

BATCH = 2000


def stable_event_id(event: Mapping[str, Any]) -> str:
    """An id from what the event says (user, item, type, time): the same line imported twice is one event."""
    key = "\x1f".join(str(event.get(k, "")) for k in ("user_id", "item_id", "type", "ts"))
    return "imp-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def import_events(es: Elasticsearch, settings: Settings, rows: Iterable[Any],
                  progress: Callable[[int], object] | None = None, rebuild: bool = True) -> dict[str, Any]:
    """Validate and write events (each needs its original `ts`); invalid lines are reported, not written.
    Then rebuild every profile, seen set and history from the events index."""
    written = 0
    invalid: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    offset = 0
    for batch in batches(rows, BATCH):
        ready = []
        for index, row in enumerate(batch, start=offset):
            if isinstance(row, Mapping) and row.get("ts") in (None, ""):
                invalid.append({"index": index, "id": None, "errors": ["ts: required when importing history"]})
                continue
            if isinstance(row, Mapping) and not row.get("event_id"):
                row = {**row, "event_id": stable_event_id(row)}
            ready.append((index, row))
        events, errors = validate_events([row for _, row in ready])
        invalid += [{**e.as_dict(), "index": ready[e.index][0]} for e in errors]
        report = record_events(es, settings, [event_document(event) for event in events])
        written += report.ok
        failed += report.failed
        offset += len(batch)
        if progress:
            progress(len(batch))
    es.indices.refresh(index=alias_name(settings, "events"))
    result: dict[str, Any] = {"written": written, "invalid": invalid[:100], "invalid_count": len(invalid),
                              "failed": failed[:100], "failed_count": len(failed)}
    if rebuild:
        result["profiles"] = rebuild_profiles(es, settings)
    return result
