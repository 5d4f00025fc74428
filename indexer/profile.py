"""User interest profile maths: event weights, decayed long-term and session vectors, Redis encoding."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from indexer import interactions as interaction_codec
from indexer.interactions import Interaction

__all__ = [
    "EVENT_WEIGHTS", "Profile", "UnknownEventType", "apply_event", "event_weight",
    "from_bytes", "interest_vector", "query_vector", "rebuild", "session_vector", "to_bytes"
]

Vector = npt.NDArray[np.float32]

# Weights grow with the effort (and cost) an action takes, because effort is what separates intent
# from curiosity: a view is cheap, a purchase is money. An explicit like is a strong, free signal,
# so it sits just under a purchase. A dislike mirrors a like, so an explicit "no" cancels an
# explicit "yes" on the same item and pushes the profile away from it.
EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0, "like": 4.0, "dislike": -4.0}
)

_FORMAT = "1"
# Relative to the positive mass behind a vector: below this the positive and negative events have
# cancelled out and what is left is rounding noise, not a direction.
_NORM_EPS = 1e-6


class UnknownEventType(ValueError):
    """An event type with no weight in EVENT_WEIGHTS."""

    def __init__(self, event_type: str) -> None:
        # args holds only the type so the exception pickles and unpickles unchanged across Celery.
        super().__init__(event_type)
        self.event_type = event_type

    def __str__(self) -> str:
        return f"unknown event type {self.event_type!r}; expected one of {sorted(EVENT_WEIGHTS)}"


def event_weight(event_type: str) -> float:
    """The profile weight of an event type; raises UnknownEventType for a type not in EVENT_WEIGHTS."""
    try:
        return EVENT_WEIGHTS[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


@dataclass(eq=False)
class Profile:
    """A user's interest state as of ``updated_ts``.

    ``long_term`` is the raw, unnormalised decayed sum S = sum_i w_i * v_i * 0.5 ** ((updated_ts - t_i) / h)
    (float32); keeping the sum rather than only its direction is what lets a late event be folded in
    exactly and lets a later event be weighed against everything before it. ``long_weight`` is the same
    decayed sum over the positive weights only: the evidence behind the direction. ``session`` and
    ``session_mass`` are the same two quantities for the current session, decayed to ``session_ts``
    (its newest event). Use interest_vector/session_vector/query_vector for directions.
    """

    long_term: Vector | None = None
    long_weight: float = 0.0
    session: Vector | None = None
    session_id: str | None = None
    session_ts: float | None = None
    updated_ts: float | None = None
    version: int = 0
    event_count: int = 0
    session_mass: float = 0.0
    # Recent positive interactions, newest first, for the collaborative retrievers (indexer.interactions).
    interactions: tuple[Interaction, ...] = ()

    def __post_init__(self) -> None:
        # Redis stores "no session" as an empty value, so an empty id and no id must mean the same.
        if self.session_id == "":
            self.session_id = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Profile):
            return NotImplemented
        return (
            _same_array(self.long_term, other.long_term)
            and _same_array(self.session, other.session)
            and (self.long_weight, self.session_mass, self.session_id, self.session_ts)
            == (other.long_weight, other.session_mass, other.session_id, other.session_ts)
            and (self.updated_ts, self.version, self.event_count, self.interactions)
            == (other.updated_ts, other.version, other.event_count, other.interactions)
        )


def apply_event(
    profile: Profile,
    item_vector: npt.NDArray[Any],
    *,
    weight: float,
    ts: float,
    session_id: str | None,
    half_life_s: float,
    session_gap_s: float = 1800.0,
    session_half_life_s: float = 300.0,
) -> Profile:
    """Return a new profile with one event applied; ``profile`` is left unchanged.

    Long term: the state is decayed to ``ts`` and weight * v added. An event older than ``updated_ts``
    is instead decayed by its own age and added, so arrival order does not change the result.
    The item vector is L2-normalised first so that event weights, not vector lengths, set influence.

    Session: the same with ``session_half_life_s``. A new session starts when ``session_id`` differs
    from the stored one or more than ``session_gap_s`` passed since the session's newest event. A late
    event that belongs to an earlier session (other id, or older than the gap) leaves the session
    alone; unlike the long term, session membership of late events is best effort.
    """
    _check_positive("half_life_s", half_life_s)
    _check_positive("session_half_life_s", session_half_life_s)
    if not math.isfinite(session_gap_s) or session_gap_s < 0.0:
        raise ValueError(f"session_gap_s must be a finite number >= 0, got {session_gap_s}")
    for name, value in (("weight", weight), ("ts", ts)):
        if not math.isfinite(value):
            raise ValueError(f"event {name} must be finite, got {value}")
    v = _unit(item_vector, profile)
    positive = max(weight, 0.0)
    sid = session_id or None

    long_sum, long_weight, updated_ts = _fold(
        profile.long_term, profile.long_weight, profile.updated_ts, v, weight, positive, ts, half_life_s
    )
    session, session_mass, session_ts, current_sid = _fold_session(
        profile, v, weight, positive, ts, sid, session_gap_s, session_half_life_s
    )
    return Profile(
        long_term=long_sum,
        long_weight=long_weight,
        session=session,
        session_id=current_sid,
        session_ts=session_ts,
        updated_ts=updated_ts,
        version=profile.version + 1,
        event_count=profile.event_count + 1,
        session_mass=session_mass,
        interactions=profile.interactions,
    )


def interest_vector(profile: Profile) -> Vector | None:
    """The L2-normalised long-term interest direction, or None without positive evidence.

    A profile built only from dislikes has no interest to point at (the opposite of an item is not an
    item), and one whose likes and dislikes cancelled has no direction: both give None.
    """
    return _direction(profile.long_term, profile.long_weight)


def session_vector(profile: Profile, *, now: float | None = None, session_gap_s: float = 1800.0) -> Vector | None:
    """The L2-normalised session direction, or None; with ``now``, a session idle past the gap is None."""
    if now is not None and profile.session_ts is not None and now - profile.session_ts > session_gap_s:
        return None
    return _direction(profile.session, profile.session_mass)


def query_vector(
    profile: Profile, *, session_weight: float = 0.3, now: float | None = None, session_gap_s: float = 1800.0
) -> Vector | None:
    """Normalised blend (1 - session_weight) * long-term + session_weight * session direction.

    If only one of the two exists it is returned as is; None when neither does (or they cancel).
    """
    if not 0.0 <= session_weight <= 1.0:
        raise ValueError(f"session_weight must be in [0, 1], got {session_weight}")
    long_dir = interest_vector(profile)
    session_dir = session_vector(profile, now=now, session_gap_s=session_gap_s)
    if long_dir is None or session_dir is None:
        return long_dir if session_dir is None else session_dir
    blend = (1.0 - session_weight) * long_dir.astype(np.float64) + session_weight * session_dir.astype(np.float64)
    norm = float(np.linalg.norm(blend))
    if norm <= _NORM_EPS:
        return None
    return _frozen(blend / norm)


def rebuild(
    events: Iterable[tuple[npt.NDArray[Any], float, float, str | None]],
    *,
    half_life_s: float,
    session_half_life_s: float = 300.0,
    session_gap_s: float = 1800.0,
) -> Profile:
    """Fold (vector, weight, ts, session_id) events in ts order (stable for equal ts) into a new profile."""
    profile = Profile()
    for vector, weight, ts, session_id in sorted(events, key=lambda event: event[2]):
        profile = apply_event(
            profile, vector, weight=weight, ts=ts, session_id=session_id, half_life_s=half_life_s,
            session_gap_s=session_gap_s, session_half_life_s=session_half_life_s,
        )
    return profile


def to_bytes(profile: Profile) -> dict[str, bytes]:
    """Encode for a Redis hash: vectors as raw float32 little-endian, scalars as ascii.

    Every field is always present (None as an empty value) so that HSET over an existing hash
    overwrites every field and cannot leave a stale one behind.
    """
    return {
        "fmt": _FORMAT.encode("ascii"),
        "long_term": _vector_bytes(profile.long_term),
        "long_weight": repr(float(profile.long_weight)).encode("ascii"),
        "session": _vector_bytes(profile.session),
        "session_mass": repr(float(profile.session_mass)).encode("ascii"),
        "session_id": (profile.session_id or "").encode("utf-8"),
        "session_ts": _optional_float_bytes(profile.session_ts),
        "updated_ts": _optional_float_bytes(profile.updated_ts),
        "version": str(profile.version).encode("ascii"),
        "event_count": str(profile.event_count).encode("ascii"),
        "interactions": interaction_codec.encode(profile.interactions),
    }


def from_bytes(mapping: Mapping[bytes, bytes] | Mapping[str, bytes]) -> Profile:
    """Decode a hash written by to_bytes (keys as bytes or str); an empty hash is an empty profile."""
    fields = {key.decode("utf-8") if isinstance(key, bytes) else key: value for key, value in mapping.items()}
    fmt = fields.get("fmt", _FORMAT.encode("ascii")).decode("ascii")
    if fmt != _FORMAT:
        raise ValueError(f"unsupported profile encoding version {fmt!r}; this code reads {_FORMAT!r}")

    def number(name: str) -> float | None:
        raw = fields.get(name, b"")
        return float(raw.decode("ascii")) if raw else None

    def integer(name: str) -> int:
        return int(fields.get(name, b"") or b"0")

    return Profile(
        long_term=_vector_from(fields.get("long_term", b""), "long_term"),
        long_weight=number("long_weight") or 0.0,
        session=_vector_from(fields.get("session", b""), "session"),
        session_id=fields.get("session_id", b"").decode("utf-8") or None,
        session_ts=number("session_ts"),
        updated_ts=number("updated_ts"),
        version=integer("version"),
        event_count=integer("event_count"),
        session_mass=number("session_mass") or 0.0,
        interactions=interaction_codec.decode(fields.get("interactions", b"")),
    )


def _decay(age_s: float, half_life_s: float) -> float:
    return math.pow(0.5, age_s / half_life_s)


def _fold(
    state: Vector | None, mass: float, state_ts: float | None,
    v: npt.NDArray[np.float64], weight: float, positive: float, ts: float, half_life_s: float,
) -> tuple[Vector, float, float]:
    # Decay whichever side is older to the newer timestamp; never decay the state backwards in time,
    # which would inflate it.
    if state is None or state_ts is None:
        return _frozen(v * weight), positive, ts
    if ts >= state_ts:
        factor = _decay(ts - state_ts, half_life_s)
        return _frozen(state.astype(np.float64) * factor + v * weight), mass * factor + positive, ts
    factor = _decay(state_ts - ts, half_life_s)
    return _frozen(state.astype(np.float64) + v * (weight * factor)), mass + positive * factor, state_ts


def _fold_session(
    profile: Profile, v: npt.NDArray[np.float64], weight: float, positive: float,
    ts: float, sid: str | None, session_gap_s: float, half_life_s: float,
) -> tuple[Vector, float, float, str | None]:
    current, last_ts = profile.session, profile.session_ts
    if current is None or last_ts is None:
        return _frozen(v * weight), positive, ts, sid
    if ts >= last_ts:
        if sid != profile.session_id or ts - last_ts > session_gap_s:
            return _frozen(v * weight), positive, ts, sid
    elif sid != profile.session_id or last_ts - ts > session_gap_s:
        # A late event from an earlier visit says nothing about the one in progress.
        return current, profile.session_mass, last_ts, profile.session_id
    state, mass, state_ts = _fold(current, profile.session_mass, last_ts, v, weight, positive, ts, half_life_s)
    return state, mass, state_ts, profile.session_id


def _direction(state: Vector | None, mass: float) -> Vector | None:
    if state is None or mass <= 0.0:
        return None
    norm = float(np.linalg.norm(state.astype(np.float64)))
    if norm <= _NORM_EPS * mass:
        return None
    return _frozen(state.astype(np.float64) / norm)


def _unit(item_vector: npt.NDArray[Any], profile: Profile) -> npt.NDArray[np.float64]:
    v = np.asarray(item_vector, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"item vector must be one-dimensional and non-empty, got shape {v.shape}")
    existing = profile.long_term if profile.long_term is not None else profile.session
    if existing is not None and existing.shape != v.shape:
        raise ValueError(f"item vector has dimension {v.size}, the profile has {existing.size}")
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError("item vector must be finite and non-zero; skip items without an embedding")
    return v / norm


def _frozen(array: npt.NDArray[Any]) -> Vector:
    # Profiles share unchanged arrays with the profile they were derived from; read-only arrays make
    # that sharing safe.
    out = np.array(array, dtype=np.float32)
    out.flags.writeable = False
    return out


def _same_array(a: Vector | None, b: Vector | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _check_positive(name: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def _vector_bytes(vector: Vector | None) -> bytes:
    return b"" if vector is None else np.asarray(vector, dtype="<f4").tobytes()


def _vector_from(raw: bytes, name: str) -> Vector | None:
    if not raw:
        return None
    if len(raw) % 4:
        raise ValueError(f"profile field {name!r} is {len(raw)} bytes, not a whole number of float32 values")
    return _frozen(np.frombuffer(raw, dtype="<f4"))


def _optional_float_bytes(value: float | None) -> bytes:
    # repr of a Python float is the shortest string that parses back to the same float: exact round trip.
    return b"" if value is None else repr(float(value)).encode("ascii")
