"""The erasure's rules that need no server: which records a tombstone covers, and the names it leaves."""
from __future__ import annotations

from indexer import tombstones
from indexer.settings import load_settings


def test_a_tombstone_covers_everything_accepted_before_the_erasure_and_nothing_later() -> None:
    erased = 1_800_000_000.0
    assert tombstones.before(erased, erased - 86400)  # backdated
    assert tombstones.before(erased, erased + tombstones.ACCEPTED_SKEW_S)  # the skew the API accepts
    assert tombstones.before(erased, None)  # an unreadable ts: erased, not kept
    assert not tombstones.before(erased, erased + tombstones.ACCEPTED_SKEW_S + 1)


def test_timestamps_are_read_as_events_carry_them() -> None:
    assert tombstones.epoch("2027-01-15T08:00:00Z") == tombstones.epoch("2027-01-15T08:00:00+00:00")
    assert tombstones.epoch(12.5) == 12.5 and tombstones.epoch("not a date") is None
    assert tombstones.event_user_ts({"user_id": None, "ts": 3}) == ("", 3.0)


def test_the_tombstone_key_does_not_hold_the_id() -> None:
    key = tombstones.tombstone_key(load_settings(index_prefix="hr"), "alice@example.com")
    assert key.startswith("hr:erased:{") and "alice" not in key
