"""Every Redis key the project uses: one named constant per kind, composed by `key` (nobody formats one inline).

A key is `<index prefix>:<kind>[:<part>...]`, so that one deployment's keys share its index prefix and
test runs and demo stacks on one Redis never meet. A key about one user (`user_key`) carries the user's hash
tag, `{<digest of the id>}`, right after its kind: on a Redis Cluster every key of one user (profile, seen set,
history, response caches, erasure tombstone) then hashes to one slot, so the read path's pipeline and the
write path's WATCH/MULTI over them stay on one node. The tag is a digest, not the id, because the tombstone
must carry it without holding the id (indexer.tombstones).
"""
from __future__ import annotations

import hashlib

# Per user (indexer.profile_store; composed by user_key): the profile hash, the seen set, the recent positive items.
PROFILE = "profile"
SEEN = "seen"
HISTORY = "history"
# Shared by all users (indexer.profile_store): trending scores, profile updates deferred while
# Elasticsearch was down.
TRENDING = "trending"
PENDING_PROFILE = "pending-profile"
# Response caches (indexer.response_cache; per user by user_key, an anonymous one by key) and cached query
# embeddings (indexer.recommender).
RECO = "reco"
RECO_LAST = "reco-last"
QUERY_VECTOR = "qvec"
# Served-list log lines waiting to be bulk-written (indexer.reco_logs).
RECO_LOG_QUEUE = "reco-log-queue"
# Event batches that exhausted their retries (workers.tasks writes, `hybridrec events replay` reads).
EVENTS_DEAD_LETTER = "events-dead-letter"
# Erasure tombstones (indexer.tombstones): under the user's tag alone, the instant the user's data was erased.
ERASED = "erased"
# Events that can never be written (Elasticsearch refused them, or they fail validation): kept for an
# operator, never replayed (workers.tasks and `hybridrec events replay` write, nobody reads automatically).
EVENTS_QUARANTINE = "events-quarantine"
# Event ids already applied to the live profile and trending (indexer.events.first_sightings): a client
# that sends an event twice changes the profile once, as the events index (keyed by event id) stores it once.
EVENT_APPLIED = "event-applied"
# Flask-Limiter's counters (api.auth): a key prefix, the limiter appends its own parts.
RATE_LIMIT = "ratelimit"
# One task of a kind at a time (workers.tasks.task_lock).
REINDEX_LOCK = "reindex-lock"
MODEL_LOCK = "model-lock"
PROFILE_DRAIN_LOCK = "profile-drain-lock"


def key(prefix: str, kind: str, *parts: object) -> str:
    """The Redis key of this kind under the index prefix; `parts` (a user id, a digest) follow in order."""
    return ":".join([prefix, kind, *(str(part) for part in parts)])


def user_digest(user_id: str) -> str:
    """A digest of the user id: the user's hash tag, and the tombstone's name (neither holds the id)."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:32]


def user_tag(user_id: str) -> str:
    """The user's Redis Cluster hash tag: only what is inside the first braces picks a key's slot."""
    return "{" + user_digest(user_id) + "}"


def user_key(prefix: str, kind: str, user_id: str, *parts: object) -> str:
    """The key of this kind about one user: `<prefix>:<kind>:{<digest>}[:<part>...]:<user>`, in the user's slot."""
    return key(prefix, kind, user_tag(user_id), *parts, user_id)


def user_of(prefix: str, kind: str, name: str) -> str:
    """The user id a `user_key` of this kind ends with (the tag has a fixed length)."""
    return name[len(user_key(prefix, kind, "")):]
