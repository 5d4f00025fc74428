"""Unit tests for indexer.profile: event weights, decayed interest vectors, sessions and Redis encoding."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from indexer.profile import (
    EVENT_WEIGHTS,
    Profile,
    UnknownEventType,
    apply_event,
    event_weight,
    from_bytes,
    interest_vector,
    query_vector,
    rebuild,
    session_vector,
    to_bytes,
)

DAY = 86400.0
HALF_LIFE = 7 * DAY
X = np.array([1.0, 0.0, 0.0], dtype=np.float32)
Y = np.array([0.0, 1.0, 0.0], dtype=np.float32)
Z = np.array([0.0, 0.0, 1.0], dtype=np.float32)


def apply(profile: Profile, v: np.ndarray, weight: float, ts: float, session_id: str | None = "s1") -> Profile:
    return apply_event(profile, v, weight=weight, ts=ts, session_id=session_id, half_life_s=HALF_LIFE)


def some(vector: np.ndarray | None) -> np.ndarray:
    assert vector is not None
    return vector


def cos(a: np.ndarray | None, b: np.ndarray) -> float:
    a = some(a)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_event_weights() -> None:
    assert event_weight("purchase") == 5.0
    assert event_weight("dislike") == -4.0
    assert dict(EVENT_WEIGHTS) == {
        "view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0, "like": 4.0, "dislike": -4.0
    }


def test_unknown_event_type_raises_and_pickles() -> None:
    with pytest.raises(UnknownEventType, match="'wishlist'") as info:
        event_weight("wishlist")
    assert isinstance(info.value, ValueError)
    restored = pickle.loads(pickle.dumps(info.value))
    assert isinstance(restored, UnknownEventType)
    assert restored.event_type == "wishlist"
    assert str(restored) == str(info.value)


def test_first_event_sets_direction_and_counters() -> None:
    profile = apply(Profile(), 3.0 * X, event_weight("click"), 100.0)
    assert np.array_equal(some(interest_vector(profile)), X)  # item vector normalised: weight sets influence
    np.testing.assert_array_equal(some(profile.long_term), 2.0 * X)
    assert (profile.version, profile.event_count, profile.updated_ts, profile.long_weight) == (1, 1, 100.0, 2.0)
    assert profile.long_term is not None and profile.long_term.dtype == np.float32


def test_like_moves_interest_toward_item() -> None:
    profile = apply(Profile(), X, 1.0, 0.0)
    before = cos(interest_vector(profile), Y)
    after_like = apply(profile, Y, event_weight("like"), 10.0)
    assert cos(interest_vector(after_like), Y) > before
    assert cos(interest_vector(after_like), Y) == pytest.approx(4.0 / np.hypot(1.0, 4.0), rel=1e-5)
    assert profile.version == 1  # the input profile is unchanged
    assert after_like.version == 2


def test_dislike_moves_interest_away_from_item() -> None:
    mixed = (X + Y) / np.sqrt(2)
    profile = apply(apply(Profile(), X, 2.0, 0.0), mixed, 2.0, 1.0)
    before = cos(interest_vector(profile), Y)
    after = apply(profile, Y, event_weight("dislike"), 2.0)
    assert cos(interest_vector(after), Y) < before
    assert cos(interest_vector(after), Y) < 0.0


def test_only_dislikes_or_cancelled_gives_no_interest() -> None:
    disliked = apply(Profile(), X, -4.0, 0.0)
    assert interest_vector(disliked) is None
    cancelled = apply(apply(Profile(), X, 4.0, 0.0), X, -4.0, 0.0)
    assert interest_vector(cancelled) is None
    assert interest_vector(Profile()) is None


def test_old_event_matters_less_than_fresh_one() -> None:
    # Same weight, X a week (one half-life) before Y: X counts half as much as Y.
    profile = apply(apply(Profile(), X, 2.0, 0.0), Y, 2.0, HALF_LIFE)
    np.testing.assert_allclose(some(profile.long_term), [1.0, 2.0, 0.0], rtol=1e-6)
    assert profile.long_weight == pytest.approx(3.0)
    vector = interest_vector(profile)
    assert vector is not None and vector[1] > vector[0]
    # Without the gap both would count the same.
    same_time = apply(apply(Profile(), X, 2.0, 0.0), Y, 2.0, 0.0)
    assert cos(interest_vector(same_time), X) == pytest.approx(cos(interest_vector(same_time), Y))


def test_out_of_order_events_match_in_order() -> None:
    rng = np.random.default_rng(7)
    events = [(rng.normal(size=8).astype(np.float32), w, float(ts)) for w, ts in
              [(1.0, 0.0), (5.0, 3 * DAY), (-4.0, 5 * DAY), (2.0, 9 * DAY), (4.0, 20 * DAY)]]
    in_order = Profile()
    for v, w, ts in events:
        in_order = apply(in_order, v, w, ts, session_id=None)
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    assert [e[2] for e in shuffled] != [e[2] for e in events]
    late = Profile()
    for v, w, ts in shuffled:
        late = apply(late, v, w, ts, session_id=None)
    np.testing.assert_allclose(some(late.long_term), some(in_order.long_term), rtol=1e-5, atol=1e-6)
    assert late.long_weight == pytest.approx(in_order.long_weight)
    assert late.updated_ts == in_order.updated_ts == 20 * DAY
    assert late.version == late.event_count == 5


def test_late_event_is_decayed_by_its_own_age() -> None:
    profile = apply(apply(Profile(), X, 2.0, HALF_LIFE), Y, 2.0, 0.0)
    np.testing.assert_allclose(some(profile.long_term), [2.0, 1.0, 0.0], rtol=1e-6)
    assert profile.updated_ts == HALF_LIFE


def test_session_accumulates_then_resets_on_new_session_id() -> None:
    profile = apply(Profile(), X, 1.0, 0.0, session_id="s1")
    profile = apply(profile, Y, 1.0, 300.0, session_id="s1")  # one session half-life later
    np.testing.assert_allclose(some(profile.session), [0.5, 1.0, 0.0], rtol=1e-6)
    assert (profile.session_id, profile.session_ts) == ("s1", 300.0)
    new = apply(profile, Z, 2.0, 310.0, session_id="s2")
    np.testing.assert_array_equal(some(new.session), 2.0 * Z)
    assert new.session_id == "s2"
    assert np.array_equal(some(session_vector(new)), Z)
    # The long-term vector keeps everything.
    assert new.long_term is not None and np.all(new.long_term > 0)


def test_session_resets_after_gap_and_expires_on_read() -> None:
    profile = apply(Profile(), X, 1.0, 0.0, session_id="s1")
    later = apply(profile, Y, 1.0, 1801.0, session_id="s1")
    np.testing.assert_array_equal(some(later.session), Y)
    assert session_vector(later, now=1801.0 + 1800.0) is not None
    assert session_vector(later, now=1801.0 + 1801.0) is None


def test_late_event_from_previous_session_leaves_session_alone() -> None:
    profile = apply(Profile(), Y, 1.0, 1000.0, session_id="s2")
    late = apply(profile, X, 1.0, 900.0, session_id="s1")
    np.testing.assert_array_equal(some(late.session), profile.session)
    assert late.session_id == "s2"
    assert late.long_term is not None and late.long_term[0] > 0  # but the long term learns from it


def test_query_vector_blends_long_term_and_session() -> None:
    profile = apply(Profile(), X, 5.0, 0.0, session_id="old")
    profile = apply(profile, Y, 1.0, 10 * DAY, session_id="new")
    long_dir, session_dir = interest_vector(profile), session_vector(profile)
    assert long_dir is not None and session_dir is not None
    np.testing.assert_array_equal(some(session_dir), Y)
    blend = query_vector(profile, session_weight=0.3)
    expected = 0.7 * long_dir.astype(np.float64) + 0.3 * Y
    np.testing.assert_allclose(some(blend), expected / np.linalg.norm(expected), rtol=1e-6)
    np.testing.assert_allclose(some(query_vector(profile, session_weight=0.0)), long_dir)
    np.testing.assert_allclose(some(query_vector(profile, session_weight=1.0)), Y)
    np.testing.assert_allclose(some(query_vector(profile, now=20 * DAY)), long_dir)  # stale session ignored
    assert query_vector(Profile()) is None
    with pytest.raises(ValueError, match="session_weight"):
        query_vector(profile, session_weight=1.5)


def test_rebuild_equals_sequential_apply_in_ts_order() -> None:
    rng = np.random.default_rng(11)
    events = [
        (rng.normal(size=4).astype(np.float32), w, ts, sid)
        for w, ts, sid in [(2.0, 50.0, "a"), (1.0, 10.0, "a"), (-4.0, 400.0, "a"), (5.0, 5000.0, "b"), (3.0, 30.0, "a")]
    ]
    sequential = Profile()
    for v, w, ts, sid in sorted(events, key=lambda e: e[2]):
        sequential = apply_event(sequential, v, weight=w, ts=ts, session_id=sid, half_life_s=HALF_LIFE)
    rebuilt = rebuild(events, half_life_s=HALF_LIFE)
    assert rebuilt == sequential
    assert rebuilt.version == 5 and rebuilt.session_id == "b"
    assert rebuild([], half_life_s=HALF_LIFE) == Profile()


def test_bytes_round_trip_is_exact() -> None:
    profile = apply(apply(Profile(), X + 0.1 * Y, 1.0 / 3.0, 1_700_000_000.123), Z, -4.0, 1_700_000_007.7)
    encoded = to_bytes(profile)
    assert all(isinstance(value, bytes) for value in encoded.values())
    assert encoded["version"] == b"2"
    assert len(encoded["long_term"]) == 3 * 4
    assert np.frombuffer(encoded["long_term"], dtype="<f4").tolist() == some(profile.long_term).tolist()
    from_str_keys = from_bytes(encoded)
    from_byte_keys = from_bytes({key.encode(): value for key, value in encoded.items()})
    assert from_str_keys == profile
    assert from_byte_keys == profile
    assert from_str_keys.long_weight == profile.long_weight
    assert from_str_keys.session_ts == profile.session_ts


def test_bytes_round_trip_of_empty_and_sessionless_profiles() -> None:
    assert from_bytes(to_bytes(Profile())) == Profile()
    assert from_bytes({}) == Profile()
    sessionless = apply(Profile(), X, 1.0, 5.0, session_id=None)
    encoded = to_bytes(sessionless)
    assert encoded["session_id"] == b""
    assert from_bytes(encoded) == sessionless
    with pytest.raises(ValueError, match="encoding version"):
        from_bytes({**encoded, "fmt": b"99"})


def test_profile_equality_sees_vector_changes() -> None:
    profile = apply(Profile(), X, 1.0, 0.0)
    assert profile != apply(Profile(), Y, 1.0, 0.0)
    assert profile == apply(Profile(), X, 1.0, 0.0)


def test_apply_event_validation() -> None:
    profile = apply(Profile(), X, 1.0, 0.0)
    with pytest.raises(ValueError, match="dimension"):
        apply(profile, np.ones(4, dtype=np.float32), 1.0, 1.0)
    with pytest.raises(ValueError, match="non-zero"):
        apply(profile, np.zeros(3, dtype=np.float32), 1.0, 1.0)
    with pytest.raises(ValueError, match="half_life_s"):
        apply_event(profile, X, weight=1.0, ts=1.0, session_id=None, half_life_s=0.0)
