"""The profile store on a real Redis Cluster (3 primaries, 3 replicas, on loopback): the API's write path
(POST /v1/events -> ProfileStore.apply) and read path (recommendations, response cache) run on it, every key of
one user is in one slot (CLUSTER KEYSLOT, asked of the server), rate limits count there, and when the primary
holding a user's slot is killed (-9) its replica takes over with the profile: reads and writes recover."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import RedisError

from tests.helpers import PREFIX, _die_with_parent, catalog_items

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster]

# Six consecutive ports from here (and their cluster bus ports, +10000), 127.0.0.1 only.
BASE_PORT = int(os.environ.get("HYBRIDREC_TEST_REDIS_CLUSTER_PORT", "7101"))
ITEMS = catalog_items("s1", "s2", "s3", "c1", "c2", "f1")
EVENTS = [("ann", "s1", "like"), ("ann", "s2", "click"), ("ann", "c1", "dislike"), ("bob", "c2", "purchase")]


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """The first truthy result of `check` (Redis errors count as not yet), polling for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except RedisError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


class Cluster:
    """Six redis-server processes in cluster mode, each with its own folder, appendonly, 1 s node timeout."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = [BASE_PORT + n for n in range(6)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def node(self, port: int) -> Redis:
        return Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        for port in self.ports:
            folder = self.root / str(port)
            folder.mkdir()
            self.procs[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(folder / "nodes.conf"), "--cluster-node-timeout", "1000",
                 "--appendonly", "yes", "--save", "", "--dir", str(folder), "--logfile", str(folder / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        for port in self.ports:
            eventually(lambda port=port: self.node(port).ping(), f"redis-server on {port} answers", 20)
        created = subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                                  "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True,
                                 timeout=60)
        assert created.returncode == 0, created.stdout + created.stderr
        for port in self.ports:
            eventually(lambda port=port: self.node(port).cluster("info")["cluster_state"] == "ok",
                       f"cluster_state:ok on {port}")
        for port in self.ports:
            eventually(lambda port=port: self.node(port).info("replication")["role"] == "master"
                       or self.node(port).info("replication")["master_link_status"] == "up",
                       f"the replica on {port} in sync")

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    assert shutil.which("redis-server") and shutil.which("redis-cli"), "apt-get install -y redis-server"
    running = Cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture()
def cluster_settings(cluster: Cluster) -> Any:
    from indexer.clients import make_redis
    from indexer.settings import load_settings

    nodes = ",".join(f"127.0.0.1:{port}" for port in cluster.ports[:3])  # the client finds the others
    settings = load_settings(redis_url=f"redis+cluster://{nodes}")
    make_redis(settings).flushdb()  # on every primary
    return settings


@pytest.fixture()
def catalog(fresh: None, es: Any, settings: Any) -> None:
    from tests.helpers import index_catalog

    index_catalog(es, settings, ITEMS)


def post_event(client: Any, user: str, item: str, kind: str) -> dict[str, Any]:
    response = client.post("/v1/events", json={"user_id": user, "item_id": item, "type": kind})
    assert response.status_code == 202, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["profile_pending"] is False
    return body


def test_profiles_on_a_redis_cluster_survive_a_primary_failover(cluster, catalog, cluster_settings) -> None:
    from redis.cluster import RedisCluster

    from api import create_app
    from indexer import keys, tombstones
    from indexer.clients import make_redis, reply_text
    from indexer.profile import to_bytes
    from indexer.profile_store import ProfileStore

    app = create_app({"TESTING": True}, settings=cluster_settings)
    client = app.test_client()
    redis = make_redis(cluster_settings)
    assert isinstance(redis, RedisCluster) and len(redis.get_primaries()) == 3
    assert client.get("/ready").get_json()["checks"]["redis"] is True  # PING reaches every node

    for user, item, kind in EVENTS:  # the real write path: WATCH/MULTI on the user's slot, then trending
        post_event(client, user, item, kind)
    store = ProfileStore(redis, cluster_settings)
    before = store.load("ann")
    assert before is not None and before.version == 3 and before.event_count == 3
    assert store.history("ann") == ["s2", "s1"] and set(store.seen("ann")) == {"s1", "s2", "c1"}
    assert {item for item, _ in store.trending(10)} == {"s1", "s2", "c2"}
    assert list(store.user_ids()) and set(store.user_ids()) == {"ann", "bob"}  # SCAN over every primary

    first = client.get("/v1/users/ann/recommendations?k=3")  # the real read path
    assert first.status_code == 200 and first.get_json()["cold_start"] is False
    served = [hit["id"] for hit in first.get_json()["items"]]
    assert served and not {"s1", "s2", "c1"} & set(served)
    assert client.get("/v1/users/ann/recommendations?k=3").get_json()["cached"] is True

    # Every key of ann's (profile, seen, history, cached answers, the tombstone she would get) in one slot,
    # as the server hashes them; her tag is in no other user's keys.
    tag = keys.user_tag("ann")
    names = [reply_text(name) for name in redis.scan_iter(match=f"{PREFIX}:*{tag}*", count=1000)]
    assert {name.split(":")[1] for name in names} == {keys.PROFILE, keys.SEEN, keys.HISTORY, keys.RECO,
                                                     keys.RECO_LAST}
    slots = {redis.cluster_keyslot(name) for name in [*names, tombstones.tombstone_key(cluster_settings, "ann")]}
    assert slots == {redis.cluster_keyslot(keys.user_key(PREFIX, keys.PROFILE, "ann"))}
    assert redis.cluster_keyslot(keys.user_key(PREFIX, keys.PROFILE, "bob")) not in slots

    # Flask-Limiter keeps its counters on the cluster too (the limits library reads the same URL).
    limited = create_app({"TESTING": True}, settings=cluster_settings.model_copy(update={"rate_limit": "2/minute"}))
    statuses = [limited.test_client().get("/v1/users/zed/recommendations").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert list(redis.scan_iter(match=f"*{keys.key(PREFIX, keys.RATE_LIMIT)}*", count=1000))

    # The write path acknowledges before replication (Redis replicates asynchronously): make sure the replica
    # has ann's writes (WAIT counts the replicas that acknowledged this connection's writes, and the
    # replication stream is ordered), then kill -9 the primary that holds her slot.
    primary = redis.get_node_from_key(keys.user_key(PREFIX, keys.PROFILE, "ann"))
    direct = cluster.node(primary.port)
    direct.set(keys.key(PREFIX, "wait-marker", tag), 1)
    assert direct.wait(1, 5000) == 1
    replica = int(direct.info("replication")["slave0"]["port"])
    cluster.kill(primary.port)

    # Reads recover: asked at once, the API answers a 503 until the replica has taken over (never a 500), then
    # personalised, from the surviving copy (the cached answer included).
    seen_statuses: list[int] = []

    def read() -> Any:
        response = client.get("/v1/users/ann/recommendations?k=3")
        seen_statuses.append(response.status_code)
        return response.get_json() if response.status_code == 200 else None

    body = eventually(read, "recommendations answer after the failover")
    assert set(seen_statuses) <= {200, 503}, seen_statuses
    assert cluster.node(replica).info("replication")["role"] == "master"
    assert body["cold_start"] is False and [hit["id"] for hit in body["items"]] == served
    after = eventually(lambda: store.load("ann"), "the profile reads after the failover")
    assert to_bytes(after) == to_bytes(before)  # vectors, counts and the kept interactions, byte for byte
    assert store.history("ann") == ["s2", "s1"]

    # Writes recover on the new primary.
    assert post_event(client, "ann", "f1", "like")["profile_versions"] == {"ann": 4}
    assert cluster.node(replica).hget(keys.user_key(PREFIX, keys.PROFILE, "ann"), "version") == b"4"


def test_erasure_export_and_rebuild_run_on_a_redis_cluster(cluster, catalog, cluster_settings, es) -> None:
    """What else touches one user's keys on a cluster: the export, the erasure (one transaction on the user's
    slot, the Lua scrub of the shared queues, the tombstone the write path watches) and `profiles rebuild`."""
    from api import create_app
    from indexer import keys, tombstones
    from indexer.clients import make_redis, reply_text
    from indexer.events import event_document, record_events, validate_events
    from indexer.profile_maintenance import rebuild_profiles
    from indexer.profile_store import ProfileStore

    client = create_app({"TESTING": True}, settings=cluster_settings).test_client()
    redis = make_redis(cluster_settings)
    store = ProfileStore(redis, cluster_settings)
    # Event ids: a session worker left running by earlier tests writes the accepted events to the events
    # index too; the same ids keep that and the explicit write below one copy each.
    raw = [{"user_id": user, "item_id": item, "type": kind, "event_id": f"rc-{n}"}
           for n, (user, item, kind) in enumerate(EVENTS)]
    assert client.post("/v1/events", json={"events": raw}).status_code == 202
    assert client.get("/v1/users/bob/recommendations?k=3").status_code == 200  # bob's cached answers

    exported = client.get("/v1/users/bob/export").get_json()
    assert exported["found"] is True and exported["profile"]["version"] == 1 and exported["history"] == ["c2"]
    erased = client.delete("/v1/users/bob")
    assert erased.status_code == 200, erased.get_json()
    counts = erased.get_json()["deleted"]
    assert (counts["profile"], counts["seen"], counts["history"]) == (1, 1, 1) and counts["caches"] == 2
    tag = keys.user_tag("bob")
    left = [reply_text(name) for name in redis.scan_iter(match=f"{PREFIX}:*{tag}*", count=1000)]
    assert left == [tombstones.tombstone_key(cluster_settings, "bob")]
    # An event accepted before the erasure and applied after it does not bring bob back (the tombstone is in
    # his slot, watched with his profile).
    assert client.post("/v1/events", json={"user_id": "bob", "item_id": "c1", "type": "view"}).status_code == 202
    assert store.load("bob") is None

    # Rebuilt from the events index (the worker's writer puts them there): ann again, bob still erased.
    valid, _ = validate_events(raw)
    record_events(es, cluster_settings, [event_document(event) for event in valid])
    redis.delete(keys.user_key(PREFIX, keys.PROFILE, "ann"))
    assert rebuild_profiles(es, cluster_settings) == {"users": 1, "events": 3}
    rebuilt = store.load("ann")
    assert rebuilt is not None and rebuilt.version == 3 and store.history("ann") == ["s2", "s1"]
    assert {item for item, _ in store.trending(10)} == {"s1", "s2"}  # bob's purchase went with him


@pytest.mark.parametrize("where", ["plain", "cluster"])
def test_upgrade_moves_untagged_keys_to_their_tagged_names(where, request, settings, redis_client) -> None:
    """`hybridrec profiles migrate-keys`: profiles, seen sets, histories and tombstones named before the hash
    tag move (TTL kept; across slots on a cluster); a user written since the upgrade keeps the newer key."""
    from indexer import keys, tombstones
    from indexer.clients import make_redis
    from indexer.profile import Profile, to_bytes
    from indexer.profile_maintenance import migrate_untagged_keys
    from indexer.profile_store import ProfileStore

    target = request.getfixturevalue("cluster_settings") if where == "cluster" else settings
    redis = make_redis(target)
    redis.flushdb()
    redis.hset(f"{PREFIX}:profile:alice", mapping=to_bytes(Profile(version=2, event_count=2)))
    redis.zadd(f"{PREFIX}:seen:alice", {"s1": time.time()})
    redis.expire(f"{PREFIX}:seen:alice", 1000)
    redis.rpush(f"{PREFIX}:history:alice", "s1")
    redis.set(f"{PREFIX}:erased:{tombstones.user_digest('bob')}", repr(time.time()), ex=1000)
    redis.hset(f"{PREFIX}:profile:carol", mapping=to_bytes(Profile(version=1, event_count=1)))
    redis.hset(keys.user_key(PREFIX, keys.PROFILE, "carol"), mapping=to_bytes(Profile(version=5, event_count=5)))

    assert migrate_untagged_keys(target) == {"moved": 4, "kept_newer": 1}
    store = ProfileStore(redis, target)
    alice = store.load("alice")
    assert alice is not None and alice.version == 2
    assert store.seen("alice") == ["s1"] and store.history("alice") == ["s1"]
    assert 0 < redis.ttl(keys.user_key(PREFIX, keys.SEEN, "alice")) <= 1000
    assert redis.ttl(tombstones.tombstone_key(target, "bob")) > 0 and tombstones.erased_at(redis, target, ["bob"])
    assert store.load("carol").version == 5 and not redis.exists(f"{PREFIX}:profile:alice")
    assert migrate_untagged_keys(target) == {"moved": 0, "kept_newer": 1}  # idempotent
