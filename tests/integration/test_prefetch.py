"""Prefetch (HYBRIDREC_PREFETCH): after an event a real Celery worker computes the user's next default list
and caches it under the new profile version; the next request is a hit and equals a fresh computation, a
list older than the profile that asks is never served, and with prefetch off nothing is sent at all."""
from __future__ import annotations

import time

import pytest

from tests.helpers import index_catalog

pytestmark = pytest.mark.integration

ROWS = [(f"{theme}-{n}", f"{theme} {title} {n}", f"A {theme} item about {title}, number {n}.", theme)
        for theme, title in (("space", "rockets and planets"), ("cook", "pasta and bread"),
                             ("garden", "roses and tomatoes")) for n in range(6)]
WAIT_S = 90  # how long a prefetch may take on a loaded machine: a bound on the wait, not an assertion


@pytest.fixture()
def catalog(fresh, es, settings):
    index_catalog(es, settings, ROWS)


def make_client(settings, prefetch: bool):
    from api import create_app

    app = create_app({"TESTING": True}, settings=settings.model_copy(update={"prefetch": prefetch}))
    services = app.extensions["hybridrec"]
    sent: list[str] = []
    enqueue = services.enqueue

    def spy(task_name: str, *args):  # the real send, with the task names recorded
        sent.append(task_name)
        return enqueue(task_name, *args)

    services.enqueue = spy
    return app.test_client(), sent


def send(client, user: str, item: str, kind: str = "like") -> int:
    response = client.post("/v1/events", json={"user_id": user, "item_id": item, "type": kind})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["profile_versions"][user]


def cached_version(redis_client, settings, user: str) -> int | None:
    """The profile version the default list of `user` is cached under, if any."""
    from indexer.read_params import ReadParams
    from indexer.response_cache import FIELDS, ResponseCache

    cache = ResponseCache(redis_client, settings)
    entry = cache.entry(redis_client.hmget(cache.key(user, ReadParams(), None), FIELDS))
    return entry.profile_version if entry else None


def wait_for_entry(redis_client, settings, user: str, version: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while cached_version(redis_client, settings, user) != version:
        assert time.monotonic() < deadline, f"no list prefetched for {user} at version {version}"
        time.sleep(0.05)


def fresh_list(settings, es, redis_client, user: str) -> dict:
    """What a computation from scratch gives now (the cache off, nothing read from it or written)."""
    from indexer.encoder import get_encoder
    from indexer.read_params import ReadParams
    from indexer.recommender import Recommender

    engine = Recommender(settings.model_copy(update={"reco_cache_ttl": 0}), es, redis_client,
                         lambda: get_encoder(settings))
    return engine.recommend(user, ReadParams())


def ids(body: dict) -> list[str]:
    return [item["id"] for item in body["items"]]


def test_after_an_event_the_next_request_is_the_prefetched_list(catalog, worker, settings, es, redis_client):
    from indexer.task_routing import PREFETCH

    client, sent = make_client(settings, prefetch=True)
    version = send(client, "pia", "space-1")
    assert sent.count(PREFETCH) == 1
    wait_for_entry(redis_client, settings, "pia", version)
    served = client.get("/v1/users/pia/recommendations").get_json()
    assert served["cached"] is True and served["profile_version"] == version and not served["cold_start"]
    fresh = fresh_list(settings, es, redis_client, "pia")
    assert ids(served) == ids(fresh) and "space-1" not in ids(served)
    assert [i["score"] for i in served["items"]] == pytest.approx([i["score"] for i in fresh["items"]])
    assert set(ids(served)[:3]) <= {r[0] for r in ROWS if r[3] == "space"}  # personal, not trending


def test_two_quick_events_leave_the_newest_list_and_never_an_older_one(catalog, worker, settings, es,
                                                                       redis_client):
    client, _ = make_client(settings, prefetch=True)
    first = send(client, "quin", "cook-1")
    second = send(client, "quin", "cook-2")  # before the worker has run the first prefetch, most likely
    assert second == first + 1
    served = client.get("/v1/users/quin/recommendations").get_json()
    assert served["profile_version"] == second  # whatever the worker had done by now
    assert not {"cook-1", "cook-2"} & set(ids(served))
    wait_for_entry(redis_client, settings, "quin", second)
    again = client.get("/v1/users/quin/recommendations").get_json()
    assert again["cached"] is True and again["profile_version"] == second
    assert ids(again) == ids(fresh_list(settings, es, redis_client, "quin"))


def test_a_list_cached_for_an_older_profile_is_never_served(catalog, settings, es, redis_client):
    from indexer.encoder import get_encoder
    from indexer.recommender import Recommender
    from indexer.task_routing import PREFETCH

    client, sent = make_client(settings, prefetch=False)
    send(client, "rey", "garden-1")
    engine = Recommender(settings, es, redis_client, lambda: get_encoder(settings))
    assert engine.prefetch("rey") is True and engine.prefetch("rey") is False  # cached now: not again
    assert cached_version(redis_client, settings, "rey") == 1
    send(client, "rey", "garden-2")  # the profile moves on; with prefetch off nothing recomputes the list
    assert PREFETCH not in sent
    served = client.get("/v1/users/rey/recommendations").get_json()
    assert served["cached"] is False and served["profile_version"] == 2 and "garden-2" not in ids(served)
    assert cached_version(redis_client, settings, "rey") == 2


def test_an_entry_is_never_replaced_by_one_for_an_older_profile(fresh, settings, redis_client):
    from indexer.read_params import ReadParams
    from indexer.response_cache import FIELDS, ResponseCache

    cache = ResponseCache(redis_client, settings)
    key, last = cache.key("sam", ReadParams(), None), cache.last_good_key("sam", ReadParams(), None)
    cache.put(key, last, 6, "", {"items": [{"id": "new"}]})
    cache.put(key, last, 5, "", {"items": [{"id": "old"}]})  # a slower writer, computed before the event
    entry = cache.entry(redis_client.hmget(key, FIELDS))
    assert entry is not None and entry.profile_version == 6
    assert cache.hit(entry, 6, "") == {"items": [{"id": "new"}], "cached": True}
    assert cache.hit(entry, 7, "") is None and cache.hit(entry, 6, "3") is None  # a newer profile or model
    cache.put(key, last, 7, "", {"items": [{"id": "newer"}]})
    assert cache.entry(redis_client.hmget(key, FIELDS)).profile_version == 7
