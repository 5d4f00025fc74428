"""An event batch Elasticsearch refuses for good is kept in a dead-letter list, not dropped, and can be
replayed; the good events of the same batch are written."""
from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.integration


def test_rejected_events_are_dead_lettered_and_replayable(fresh, worker, es, settings, redis_client):
    from indexer import keys
    from indexer.lifecycle import alias_name
    from workers.cli import main
    from workers.tasks import record_events

    good = {"event_id": "e-good", "user_id": "u", "item_id": "i", "type": "view", "weight": 1.0,
            "ts": "2026-01-01T00:00:00Z"}
    bad = {**good, "event_id": "e-bad", "ts": "not a date"}  # the strict mapping refuses it
    result = record_events.delay([good, bad]).get(timeout=120)
    assert result["written"] == 1 and result["failed"][0]["id"] == "e-bad"
    key = keys.key(settings.index_prefix, keys.EVENTS_DEAD_LETTER)
    entries = [json.loads(e) for e in redis_client.lrange(key, 0, -1)]
    assert [e["event_id"] for entry in entries for e in entry["events"]] == ["e-bad"]
    es.indices.refresh(index=alias_name(settings, "events"))
    assert es.count(index=alias_name(settings, "events"))["count"] == 1

    assert main(["events", "replay"]) == 0
    deadline = time.time() + 60
    while redis_client.llen(key) == 0 and time.time() < deadline:  # refused again: back in the list
        time.sleep(0.2)
    assert redis_client.llen(key) == 1
