"""A task that runs past the broker's visibility timeout is not delivered a second time while it runs
(workers/visibility.py), and a message whose worker died still comes back. Real Redis, the real kombu
Redis transport and its own restore scan, on a database no test worker listens to."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from kombu import Connection, Queue
from redis import Redis

from workers.visibility import UNACKED_INDEX, VisibilityKeeper

pytestmark = pytest.mark.integration

BROKER = os.environ.get("HYBRIDREC_TEST_VISIBILITY_BROKER_URL", "redis://127.0.0.1:6379/11")
VISIBILITY_S = 1


@pytest.fixture()
def broker():
    client = Redis.from_url(BROKER, socket_timeout=5)
    client.flushdb()
    with Connection(BROKER, transport_options={"visibility_timeout": VISIBILITY_S}) as connection:
        yield client, connection
    client.flushdb()


def restore_scan(channel) -> None:
    """What every worker runs periodically: put back each unacknowledged message older than the timeout."""
    channel.qos.restore_visible(num=100, interval=1)


@contextmanager
def delivered(connection, name: str) -> Iterator[tuple[object, object]]:
    """(channel, message): one message published to queue `name` and taken unacknowledged, as a worker
    with acks_late holds the task it is running."""
    queue = Queue(name)
    with connection.channel() as channel:
        bound = queue(channel)
        bound.declare()
        connection.Producer(channel).publish({"n": 1}, routing_key=name, declare=[queue])
        yield channel, bound.get(no_ack=False)


def test_a_held_message_is_not_restored_and_a_released_one_is(broker):
    client, connection = broker
    with delivered(connection, "hrtest-visibility") as (channel, message):
        assert message is not None and client.llen("hrtest-visibility") == 0
        tag = message.delivery_tag
        assert client.zscore(UNACKED_INDEX, tag) is not None

        keeper = VisibilityKeeper(client, interval=0.2)
        keeper.hold(tag)
        time.sleep(VISIBILITY_S * 2.5)  # a slow task, well past the timeout
        restore_scan(channel)
        assert client.llen("hrtest-visibility") == 0, "a running task's message was delivered again"
        assert client.zscore(UNACKED_INDEX, tag) > time.time() - VISIBILITY_S

        keeper.release(tag)  # its worker died: nobody re-scores it any more
        time.sleep(VISIBILITY_S * 1.5)
        restore_scan(channel)
        assert client.llen("hrtest-visibility") == 1, "a dead worker's message did not come back"
        assert client.zscore(UNACKED_INDEX, tag) is None


def test_an_acknowledged_message_is_never_added_back(broker):
    client, connection = broker
    with delivered(connection, "hrtest-visibility-ack") as (_, message):
        keeper = VisibilityKeeper(client, interval=60)
        keeper.hold(message.delivery_tag)
        message.ack()
        assert keeper.refresh() == 0  # a task that finished between two heartbeats
        assert client.zscore(UNACKED_INDEX, message.delivery_tag) is None


def test_the_worker_signals_hold_the_running_tasks_delivery_tag(broker, monkeypatch):
    from workers import celery_app

    client, _ = broker
    keeper = VisibilityKeeper(client, interval=60)
    monkeypatch.setattr(celery_app, "_keeper", keeper)
    task = SimpleNamespace(request=SimpleNamespace(properties={"delivery_tag": "tag-1"}))
    celery_app._hold_message(task=task)
    client.zadd(UNACKED_INDEX, {"tag-1": 1.0})
    assert keeper.refresh() == 1 and client.zscore(UNACKED_INDEX, "tag-1") > 1.0
    celery_app._release_message(task=task)
    assert keeper.refresh() == 0
    eager = SimpleNamespace(request=SimpleNamespace(properties=None))  # a task called in process has no tag
    celery_app._hold_message(task=eager)
    assert keeper.refresh() == 0
