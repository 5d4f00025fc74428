"""The broker keeps what the API accepted: events queued while no worker runs survive a kill -9 of Redis
(started the way scripts/stack.sh starts it, on a private port and state folder) and are all written once a
worker starts."""
from __future__ import annotations

import os
import signal
import time
from functools import partial

import pytest

from tests.helpers import PREFIX, WorkerProcess, drop_test_indices, run_stack

pytestmark = pytest.mark.integration

PORT = "6394"
EVENTS = 50


def test_events_queued_without_a_worker_survive_redis_kill_9(tmp_path, es):
    from api import create_app
    from indexer import lifecycle
    from indexer.catalog import index_items
    from indexer.documents import Item
    from indexer.encoder import get_encoder
    from indexer.settings import load_settings

    state = tmp_path / "stack"
    stack = partial(run_stack, {"HYBRIDREC_STATE_DIR": str(state), "HYBRIDREC_REDIS_PORT": PORT})
    urls = {"HYBRIDREC_REDIS_URL": f"redis://127.0.0.1:{PORT}/0", "HYBRIDREC_BROKER_URL": f"redis://127.0.0.1:{PORT}/1",
            "HYBRIDREC_INDEX_PREFIX": f"{PREFIX}-b"}
    settings = load_settings(redis_url=urls["HYBRIDREC_REDIS_URL"], broker_url=urls["HYBRIDREC_BROKER_URL"],
                             index_prefix=urls["HYBRIDREC_INDEX_PREFIX"])
    worker = WorkerProcess(tmp_path / "worker.log", env=urls, name="broker")
    try:
        stack("start", "redis")
        lifecycle.ensure_indices(es, settings)
        items = [Item(id=f"b{i}", title=f"story {i}", description="a story", version=1) for i in range(10)]
        index_items(es, settings, items, get_encoder(settings))
        client = create_app({"TESTING": True}, settings=settings).test_client()
        for n in range(EVENTS):
            answer = client.post("/v1/events", json={"user_id": f"bu{n % 5}", "item_id": f"b{n % 10}",
                                                     "type": "click", "event_id": f"durable-{n}"})
            assert answer.status_code == 202, answer.get_json()
        time.sleep(2)  # appendfsync everysec: what was accepted over a second ago is on disk

        os.kill(int((state / "run" / "redis.pid").read_text()), signal.SIGKILL)
        time.sleep(0.5)
        stack("start", "redis")
        worker.start()
        events = lifecycle.alias_name(settings, "events")
        deadline = time.time() + 120
        stored = 0
        while time.time() < deadline:
            es.indices.refresh(index=events)
            stored = int(es.count(index=events)["count"])
            if stored >= EVENTS:
                break
            time.sleep(1)
        assert stored == EVENTS, f"{EVENTS - stored} of {EVENTS} accepted events lost with Redis"
        ids = {h["_id"] for h in es.search(index=events, size=100, source=False)["hits"]["hits"]}
        assert ids == {f"durable-{n}" for n in range(EVENTS)}
        print(f"\nredis kill -9 with {EVENTS} queued events: all {stored} written after restart")
    finally:
        worker.stop()
        stack("stop", "redis")
        drop_test_indices(es, f"{PREFIX}-b-*")
