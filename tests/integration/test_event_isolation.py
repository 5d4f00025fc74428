"""One record never takes its neighbours with it on the events path: a refused event is quarantined alone,
a refused reco-log line never touches the events, and replay sets apart what can never be written.
Real node, Redis and worker."""
from __future__ import annotations

import json
import time

import pytest

from indexer import keys
from indexer.lifecycle import alias_name

pytestmark = pytest.mark.integration

EMOJI_ID = "\U0001f600" * 200  # 800 bytes: Elasticsearch refuses the whole bulk request for it


def event(n: int, **extra: object) -> dict:
    return {"event_id": f"e{n}", "user_id": f"u{n % 5}", "item_id": f"i{n % 7}", "type": "view", "weight": 1.0,
            "ts": "2026-01-01T00:00:00Z", **extra}


def stored(es, settings) -> set[str]:
    alias = alias_name(settings, "events")
    es.indices.refresh(index=alias)
    return {h["_id"] for h in es.search(index=alias, size=1000, source=False)["hits"]["hits"]}


def parked(redis_client, settings, kind: str) -> list[dict]:
    raw = redis_client.lrange(keys.key(settings.index_prefix, kind), 0, -1)
    return [e for entry in (json.loads(r) for r in raw) for e in [{**ev, "_reason": entry["reason"]}
                                                                  for ev in entry["events"]]]


def wait_for(check, timeout: float = 60.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_one_refused_event_never_takes_its_neighbours(fresh, worker, es, settings, redis_client):
    from workers.tasks import record_events

    events = [event(n) for n in range(50)]
    events[10]["event_id"] = EMOJI_ID        # refused for the whole request: isolated by splitting it
    events[30]["ts"] = "not a date"          # refused per document by the strict mapping
    result = record_events.delay(events).get(timeout=120)
    assert result["written"] == 48
    assert stored(es, settings) == {e["event_id"] for e in events} - {EMOJI_ID, "e30"}
    quarantined = parked(redis_client, settings, keys.EVENTS_QUARANTINE)
    assert sorted(e["event_id"] for e in quarantined) == sorted([EMOJI_ID, "e30"])
    assert all("refused (400)" in e["_reason"] for e in quarantined)
    assert not parked(redis_client, settings, keys.EVENTS_DEAD_LETTER)


def test_refused_reco_log_never_dead_letters_events(fresh, worker, es, settings, redis_client):
    from indexer.reco_logs import log_document, queue_key
    from workers.tasks import record_events

    body = {"user_id": "u1", "strategy": "hybrid", "items": [{"id": "i1", "score": 1.0}], "took_ms": 3.0}
    good = log_document("r-ok", "recommendations", body, 5, "2026-01-01T00:00:00Z")
    bad = {**log_document("r-bad", "recommendations", body, 5, "2026-01-01T00:00:00Z"), "ts": "not a date"}
    redis_client.rpush(queue_key(settings), json.dumps(bad), json.dumps(good))
    click = event(1, type="click", request_id="r-ok")
    result = record_events.delay([click, event(2)]).get(timeout=120)
    assert result["written"] == 2 and stored(es, settings) == {"e1", "e2"}
    assert not parked(redis_client, settings, keys.EVENTS_DEAD_LETTER)

    logs = alias_name(settings, "reco_logs")

    def attributed() -> bool:
        es.indices.refresh(index=logs)
        doc = es.options(ignore_status=404).get(index=logs, id="r-ok")
        return bool(doc.get("found")) and doc["_source"]["clicked"] == 1

    assert wait_for(attributed), "the click was not attributed by the follow-up task"
    assert redis_client.llen(queue_key(settings)) == 0  # the refused line does not block the queue


def test_replay_quarantines_what_can_never_succeed(fresh, worker, es, settings, redis_client, capsys):
    from workers.cli import main

    dead = keys.key(settings.index_prefix, keys.EVENTS_DEAD_LETTER)
    redis_client.rpush(dead, json.dumps({"reason": "ConnectionError: ...", "events": [
        event(1), {**event(2), "event_id": EMOJI_ID}, {**event(3), "type": "teleport"}, event(4)]}))
    assert main(["events", "replay"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report == {"batches": 1, "events": 2, "quarantined": 2, "quarantine_total": 2}
    assert wait_for(lambda: stored(es, settings) == {"e1", "e4"})
    reasons = {e["event_id"]: e["_reason"] for e in parked(redis_client, settings, keys.EVENTS_QUARANTINE)}
    assert set(reasons) == {EMOJI_ID, "e3"}
    assert "bytes" in reasons[EMOJI_ID] and "type" in reasons["e3"]
    assert redis_client.llen(dead) == 0

    assert main(["events", "replay"]) == 0  # nothing left to loop on
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["batches"] == 0
