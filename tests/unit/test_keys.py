"""Redis key names: composed in indexer/keys.py only, and unchanged (live Redis data is found by them)."""
from __future__ import annotations

import re
from pathlib import Path

from redis import Redis

from indexer import keys
from indexer.read_params import ReadParams
from indexer.response_cache import ResponseCache
from indexer.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def test_keys_keep_their_names() -> None:
    assert keys.key("hr", keys.PROFILE, "u1") == "hr:profile:u1"
    assert keys.key("hr", keys.TRENDING) == "hr:trending"
    assert keys.key("hr", keys.EVENTS_DEAD_LETTER) == "hr:events-dead-letter"
    assert keys.key("hr", keys.PROFILE, "*") == "hr:profile:*"
    cache = ResponseCache(Redis(), load_settings(index_prefix="hr"))  # key() does no IO
    # The entry's key holds no version (the versions are stamped inside), so one round trip reads it
    # beside the profile.
    assert re.fullmatch(r"hr:reco:[0-9a-f]{24}:u1", cache.key("u1", ReadParams(), None))
    assert re.fullmatch(r"hr:reco-last:[0-9a-f]{24}:-", cache.last_good_key(None, ReadParams(), None))


def test_no_module_formats_a_redis_key_inline() -> None:
    inline = re.compile(r"""f["'][^"']*prefix\}:""")
    offenders = [f"{path.relative_to(REPO)}:{n}" for package in ("indexer", "api", "workers")
                 for path in sorted((REPO / package).glob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if inline.search(line)]
    assert not offenders, f"format Redis keys with indexer.keys.key: {offenders}"
