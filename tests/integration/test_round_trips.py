"""Redis round trips of GET /v1/users/{id}/recommendations, counted on the real app, node and Redis: the
profile, the seen set and the cached answer come in one pipeline, the rate limiter costs its one INCR, and
the log line goes out on the log writer's own thread, not the request's."""
from __future__ import annotations

import re
import threading
from unittest import mock

import pytest

from tests.helpers import index_catalog

pytestmark = pytest.mark.integration

COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")
# What a pooled connection sends when it opens, and its health check after 30 s idle (indexer.clients):
# upkeep of the connection, not part of any request's cost.
CONNECTION_SETUP = {"HELLO", "CLIENT", "SELECT", "AUTH", "PING"}


@pytest.fixture()
def counted():
    """The Redis commands of each send made from this thread (one send: one round trip)."""
    from redis.connection import AbstractConnection

    original = AbstractConnection.send_packed_command
    sends: list[list[str]] = []
    here = threading.get_ident()

    def counting(self, command, check_health=True):
        if threading.get_ident() == here:
            packet = b"".join(bytes(p) for p in (command if isinstance(command, list) else [command]))
            names = [name.decode().upper() for name in COMMAND.findall(packet)]
            if not set(names) <= CONNECTION_SETUP:
                sends.append(names)
        return original(self, command, check_health)

    with mock.patch.object(AbstractConnection, "send_packed_command", counting):
        yield sends


def make_app(settings, ttl: int):
    from api import create_app

    return create_app({"TESTING": True}, settings=settings.model_copy(update={"reco_cache_ttl": ttl}))


@pytest.mark.parametrize("ttl", [300, 0])
def test_one_round_trip_of_ours_per_request(fresh, es, settings, redis_client, counted, ttl):
    from indexer.reco_logs import queue_key

    index_catalog(es, settings, [(f"i{n}", f"rocket {n}", "a rocket to the planets", "space") for n in range(8)])
    app = make_app(settings, ttl)
    client = app.test_client()
    assert client.post("/v1/events", json={"user_id": "ria", "item_id": "i1", "type": "like"}).status_code == 202
    client.get("/v1/users/warm-up/recommendations")  # connections opened, the limiter's script loaded
    assert app.extensions["hybridrec"].reco_logs.flush()

    counted.clear()
    miss = client.get("/v1/users/ria/recommendations")
    assert miss.status_code == 200 and miss.get_json()["cached"] is False
    read = ["HGETALL", "ZREVRANGEBYSCORE"] + (["HMGET"] if ttl else [])
    limiter = ["EVALSHA"]
    writes = [["EVAL"]] if ttl else []  # the answer cached, unless an entry for a newer profile is there
    assert counted == [limiter, read, *writes]

    counted.clear()
    hit = client.get("/v1/users/ria/recommendations")
    assert hit.get_json()["cached"] is bool(ttl)
    assert counted == [limiter, read]

    # The log lines went out on the writer's thread, none on the request's.
    assert app.extensions["hybridrec"].reco_logs.flush()
    assert redis_client.llen(queue_key(settings)) == 3


def test_a_query_vector_cached_in_redis_comes_in_the_same_round_trip(fresh, es, settings, redis_client, counted):
    index_catalog(es, settings, [(f"i{n}", f"rocket {n}", "a rocket to the planets", "space") for n in range(8)])
    client = make_app(settings, 300).test_client()
    assert client.post("/v1/events", json={"user_id": "rob", "item_id": "i1", "type": "like"}).status_code == 202
    assert client.get("/v1/users/rob/recommendations?q=red+rocket").status_code == 200  # embeds, keeps the vector
    assert client.application.extensions["hybridrec"].reco_logs.flush()

    counted.clear()
    other = client.get("/v1/users/rob/recommendations?q=red+rocket&k=4")  # another entry, the same query
    assert other.status_code == 200 and other.get_json()["cached"] is False
    assert counted == [["EVALSHA"], ["HGETALL", "ZREVRANGEBYSCORE", "HMGET", "GET"], ["EVAL"]]
