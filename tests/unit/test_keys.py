"""Redis key names: composed in indexer/keys.py only, pinned (live Redis data is found by them), and every key
about one user in that user's Redis Cluster slot."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.crc import key_slot

from indexer import keys, tombstones
from indexer.read_params import ReadParams
from indexer.response_cache import ResponseCache
from indexer.settings import SettingsError, load_settings, parse_redis_cluster_url

REPO = Path(__file__).resolve().parents[2]
TAG = r"\{[0-9a-f]{32}\}"


def test_keys_keep_their_names() -> None:
    assert keys.key("hr", keys.TRENDING) == "hr:trending"
    assert keys.key("hr", keys.EVENTS_DEAD_LETTER) == "hr:events-dead-letter"
    assert keys.user_tag("u1") == "{" + tombstones.user_digest("u1") + "}"
    assert keys.user_key("hr", keys.PROFILE, "u1") == "hr:profile:" + keys.user_tag("u1") + ":u1"
    assert re.fullmatch(rf"hr:erased:{TAG}", tombstones.tombstone_key(load_settings(index_prefix="hr"), "u1"))
    cache = ResponseCache(None, load_settings(index_prefix="hr"))  # key() needs no Redis
    # The entry's key holds no version (the versions are stamped inside), so one round trip reads it
    # beside the profile.
    assert re.fullmatch(rf"hr:reco:{TAG}:[0-9a-f]{{24}}:u1", cache.key("u1", ReadParams(), None))
    assert re.fullmatch(rf"hr:reco-last:{TAG}:[0-9a-f]{{24}}:u1", cache.last_good_key("u1", ReadParams(), None))
    assert re.fullmatch(r"hr:reco-last:\{[0-9a-f]{24}\}:-", cache.last_good_key(None, ReadParams(), "item-1"))


@pytest.mark.parametrize("user", ["u1", "alice@example.com", "a}b{c", "{x}", "用户", "a:b:c"])
def test_every_key_of_one_user_hashes_to_that_users_slot(user: str) -> None:
    settings = load_settings(index_prefix="hr")
    cache = ResponseCache(None, settings)
    names = [keys.user_key("hr", kind, user) for kind in (keys.PROFILE, keys.SEEN, keys.HISTORY)]
    names += [tombstones.tombstone_key(settings, user), cache.key(user, ReadParams(), None),
              cache.last_good_key(user, ReadParams(), "item-1")]
    assert {key_slot(name.encode()) for name in names} == {key_slot(keys.user_tag(user).encode())}
    assert keys.user_of("hr", keys.PROFILE, names[0]) == user


def test_users_spread_over_the_slots() -> None:
    slots = {key_slot(keys.user_key("hr", keys.PROFILE, f"user-{n}").encode()) for n in range(1000)}
    assert len(slots) > 900  # a digest tag spreads users like plain keys would; a constant tag would give 1


def test_a_cluster_url_names_its_nodes_and_the_broker_refuses_one() -> None:
    url = parse_redis_cluster_url("redis+cluster://:s%40cret@10.0.0.1:7000,redis-b:7001/")
    assert url == (None, "s@cret", [("10.0.0.1", 7000), ("redis-b", 7001)])
    assert parse_redis_cluster_url("redis+cluster://ops:pw@h:1").username == "ops"
    assert load_settings(redis_url="redis+cluster://h:1,h:2").redis_cluster
    assert not load_settings(redis_url="redis://h:1/0").redis_cluster
    for bad in ("redis+cluster://h:1/3", "redis+cluster://h", "redis+cluster://h:1,:2", "redis+cluster://"):
        with pytest.raises(SettingsError, match="HYBRIDREC_REDIS_URL"):
            load_settings(redis_url=bad)
    with pytest.raises(SettingsError, match="HYBRIDREC_BROKER_URL: .*cannot run on a Redis Cluster"):
        load_settings(broker_url="redis+cluster://h:1")


def test_no_module_formats_a_redis_key_inline() -> None:
    inline = re.compile(r"""f["'][^"']*prefix\}:""")
    offenders = [f"{path.relative_to(REPO)}:{n}" for package in ("indexer", "api", "workers")
                 for path in sorted((REPO / package).glob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if inline.search(line)]
    assert not offenders, f"format Redis keys with indexer.keys.key: {offenders}"


def test_per_user_keys_are_composed_by_user_key() -> None:
    """A per-user kind passed to the plain `key` would leave the user's slot (a CROSSSLOT error on a cluster)."""
    per_user = r"keys\.(PROFILE|SEEN|HISTORY)\b"
    plain = re.compile(rf"keys\.key\([^)]*{per_user}")
    offenders = [f"{path.relative_to(REPO)}:{n}" for package in ("indexer", "api", "workers")
                 for path in sorted((REPO / package).glob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if plain.search(line) and "{*}" not in line]
    assert not offenders, f"compose per-user keys with indexer.keys.user_key: {offenders}"
