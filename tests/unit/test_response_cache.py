"""The cached-answer rules that need no Redis: an entry serves only the versions it was computed for, the
default request's key is the one a prefetch writes, and prefetch without a cache is refused at start-up."""
from __future__ import annotations

import pytest
from redis import Redis
from werkzeug.datastructures import MultiDict

from api.params import parse_params
from indexer.read_params import ReadParams
from indexer.response_cache import Entry, ResponseCache
from indexer.settings import SettingsError, load_settings


def test_an_entry_serves_only_its_own_versions() -> None:
    entry = Entry(profile_version=4, model="7", body=b'{"items": []}')
    assert entry.serves(4, "7")
    assert not entry.serves(5, "7")  # an event since: the list is older than the profile
    assert not entry.serves(3, "7")  # a profile rebuilt to an earlier version
    assert not entry.serves(4, "8") and not entry.serves(4, "")  # another model, or none
    assert ResponseCache.hit(entry, 4, "7") == {"items": [], "cached": True}
    assert ResponseCache.hit(entry, 5, "7") is None and ResponseCache.hit(None, 0, "") is None


def test_entry_replies_parse() -> None:
    assert ResponseCache.entry([None, None, None]) is None
    assert ResponseCache.entry([b"3", b"", b"{}"]) == Entry(3, "", b"{}")


def test_a_request_without_parameters_reads_the_entry_a_prefetch_writes() -> None:
    cache = ResponseCache(Redis(), load_settings(index_prefix="hr"))  # no IO
    assert cache.key("u1", parse_params(MultiDict()), None) == cache.key("u1", ReadParams(), None)
    assert cache.key("u1", parse_params(MultiDict({"k": "5"})), None) != cache.key("u1", ReadParams(), None)
    assert cache.key("u1", ReadParams(), None) != cache.key("u2", ReadParams(), None)


def test_prefetch_needs_the_cache() -> None:
    assert load_settings(prefetch=True).prefetch
    with pytest.raises(SettingsError, match="RECO_CACHE_TTL"):
        load_settings(prefetch=True, reco_cache_ttl=0)
