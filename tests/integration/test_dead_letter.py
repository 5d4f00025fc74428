"""An event batch that exhausts its retries is kept in a dead-letter list, not dropped, and can be replayed;
an event Elasticsearch refuses for good is quarantined alone and the good events of its batch are written."""
from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.integration


def test_refused_events_are_quarantined_and_dead_letters_replayable(fresh, worker, es, settings, redis_client):
    from indexer import keys
    from indexer.lifecycle import alias_name
    from workers.cli import main
    from workers.tasks import record_events

    good = {"event_id": "e-good", "user_id": "u", "item_id": "i", "type": "view", "weight": 1.0,
            "ts": "2026-01-01T00:00:00Z"}
    bad = {**good, "event_id": "e-bad", "ts": "not a date"}  # the strict mapping refuses it
    result = record_events.delay([good, bad]).get(timeout=120)
    assert result["written"] == 1 and result["failed"][0]["id"] == "e-bad"
    quarantine = keys.key(settings.index_prefix, keys.EVENTS_QUARANTINE)
    entries = [json.loads(e) for e in redis_client.lrange(quarantine, 0, -1)]
    assert [e["event_id"] for entry in entries for e in entry["events"]] == ["e-bad"]
    events = alias_name(settings, "events")
    es.indices.refresh(index=events)
    assert es.count(index=events)["count"] == 1

    # A batch that exhausted its retries (Elasticsearch down for hours) is sent again by replay.
    dead = keys.key(settings.index_prefix, keys.EVENTS_DEAD_LETTER)
    redis_client.rpush(dead, json.dumps({"reason": "ConnectionError", "events": [{**good, "event_id": "e-late"}]}))
    assert main(["events", "replay"]) == 0
    deadline = time.time() + 60
    while es.count(index=events)["count"] < 2 and time.time() < deadline:
        time.sleep(0.2)
        es.indices.refresh(index=events)
    assert es.count(index=events)["count"] == 2 and redis_client.llen(dead) == 0
