"""Elasticsearch's limits, checked without a node: ids in UTF-8 bytes, versions, the flattened mapping's
depth and term length, no negative external version. (tests/integration/test_poison.py checks the same
values against the real node.)"""
from __future__ import annotations

import pytest

from indexer.documents import check_flattened, validate_items
from indexer.events import validate_events


def nested(depth: int) -> object:
    value: object = "v"
    for _ in range(depth):
        value = {"k": value}
    return value


def errors_of(item: dict) -> list[str]:
    _, errors = validate_items([{"title": "t", "version": 1, **item}], max_text_chars=10_000)
    return [message for error in errors for message in error.errors]


def test_ids_are_counted_in_utf8_bytes():
    assert not errors_of({"id": "\u00e9" * 256})                      # 512 bytes
    assert "bytes" in errors_of({"id": "\U0001f600" * 129})[0]        # 129 characters, 516 bytes
    assert errors_of({"id": "\U0001f600" * 129})[0].startswith("id")
    _, errors = validate_events([{"user_id": "\U0001f600" * 200, "item_id": "i", "type": "view"}])
    assert errors and errors[0].errors[0].startswith("user_id")


def test_versions_fit_a_java_long_and_are_never_negative():
    assert not errors_of({"id": "a", "version": 2**63 - 1})
    assert errors_of({"id": "a", "version": 2**63})[0].startswith("version")
    assert errors_of({"id": "a", "version": None, "updated_at": "1969-12-31T23:00:00Z"})[0].startswith("updated_at")
    assert not errors_of({"id": "a", "version": 7, "updated_at": "1950-01-01T00:00:00Z"})
    stamped, errors = validate_items([{"id": "a", "title": "t", "created_at": "1950-01-01T00:00:00Z"}],
                                     max_text_chars=100, stamp_missing=True)
    assert stamped and not errors  # the API stamps updated_at: created_at is no version then


def test_a_time_far_ahead_cannot_become_a_version():
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 1, tzinfo=UTC)
    soon, late = (now + timedelta(minutes=m) for m in (4, 6))

    def refused(item: dict[str, object]) -> list[str]:
        _, errors = validate_items([{"title": "t", **item}], max_text_chars=100, now=now)
        return [line for error in errors for line in error.errors]

    assert not refused({"id": "a", "updated_at": soon.isoformat()})  # clock skew is fine
    assert refused({"id": "a", "updated_at": "9999-01-01T00:00:00Z"})[0].startswith("updated_at: 9999")
    assert refused({"id": "a", "created_at": late.isoformat()})[0].startswith("created_at")
    assert not refused({"id": "a", "version": 3, "updated_at": "9999-01-01T00:00:00Z"})  # only data then


@pytest.mark.parametrize(("attributes", "ok"), [
    (nested(20), True), (nested(21), False), ({"a": [[{"b": nested(18)}]]}, True),
    ({"a": [[{"b": nested(19)}]]}, False), ({"k": "x" * 32_764}, True), ({"k": "x" * 32_765}, False),
    ({"a": {"b": "\u00e9" * 16_381}}, True), ({"a": {"b": "\u00e9" * 16_382}}, False),
])
def test_flattened_limits(attributes, ok):
    if ok:
        check_flattened(attributes)  # type: ignore[arg-type]
    else:
        with pytest.raises(ValueError):
            check_flattened(attributes)  # type: ignore[arg-type]


def test_flattened_check_copes_with_any_depth():
    deep: dict = {}
    node = deep
    for _ in range(100_000):
        node["k"] = {}
        node = node["k"]
    with pytest.raises(ValueError, match="20 levels"):
        check_flattened(deep)
