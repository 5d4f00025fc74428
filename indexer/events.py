"""User events: validation, and the durable bulk write into the events index (the source of truth)."""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator
from redis import Redis

from indexer import keys
from indexer.bulk import BulkReport, run_bulk
from indexer.documents import MAX_FUTURE_SKEW, IdBytes, RecordError, describe_validation
from indexer.lifecycle import alias_name
from indexer.profile import EVENT_WEIGHTS
from indexer.settings import Settings

Id = Annotated[StrictStr, Field(min_length=1, max_length=256), IdBytes]
# How long an applied event id is remembered: a duplicate (a client's retry, a replayed request) within
# this window is not applied again. Later ones are rare and `hybridrec profiles rebuild` sets them right.
DUPLICATE_WINDOW_S = 24 * 3600


class Event(BaseModel):
    """One user action. `ts` defaults to the moment the API accepted it; `event_id` makes replays idempotent."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    user_id: Id
    item_id: Id
    type: StrictStr
    ts: datetime | None = None
    session_id: Id | None = None
    request_id: Id | None = None
    event_id: Id | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in EVENT_WEIGHTS:
            raise ValueError(f"unknown event type {value!r}; expected one of {sorted(EVENT_WEIGHTS)}")
        return value

    @field_validator("ts")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    @property
    def weight(self) -> float:
        return EVENT_WEIGHTS[self.type]

    def epoch(self) -> float:
        assert self.ts is not None
        return self.ts.timestamp()


def validate_events(raw: Iterable[Any], now: datetime | None = None) -> tuple[list[Event], list[RecordError]]:
    """Split a batch into valid events (stamped with ts and event_id) and per-event errors."""
    now = now or datetime.now(UTC)
    valid: list[Event] = []
    errors: list[RecordError] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            errors.append(RecordError(index, None, [f"event: expected a JSON object, got {type(entry).__name__}"]))
            continue
        try:
            event = Event.model_validate(dict(entry))
        except ValidationError as exc:
            errors.append(RecordError(index, None, describe_validation(exc, "event")))
            continue
        if event.ts is not None and event.ts > now + MAX_FUTURE_SKEW:
            errors.append(RecordError(index, None, [
                f"ts: {event.ts.isoformat()} is in the future (more than "
                f"{MAX_FUTURE_SKEW.seconds // 60} minutes ahead of the server clock)"]))
            continue
        event = event.model_copy(update={"ts": event.ts or now, "event_id": event.event_id or uuid.uuid4().hex})
        valid.append(event)
    return valid, errors


def first_sightings(redis: Redis, settings: Settings, events: Sequence[Event]) -> list[Event]:
    """The events whose id was not applied before (within DUPLICATE_WINDOW_S), each claimed in one SET NX,
    so that the live profile and trending count an event once, as the events index stores it once."""
    if not events:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.set(keys.key(settings.index_prefix, keys.EVENT_APPLIED, event.event_id), 1, nx=True,
                     ex=DUPLICATE_WINDOW_S)
        claimed = pipe.execute()
    return [event for event, new in zip(events, claimed, strict=True) if new]


def event_document(event: Event) -> dict[str, Any]:
    doc = event.model_dump(mode="json", exclude_none=True)
    doc["weight"] = event.weight
    return doc


def replayable(docs: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Split dead-lettered event documents into those worth sending again and those that can never be
    written (they fail the API's validation, as records from before it or edited by hand may), with why."""
    keep: list[dict[str, Any]] = []
    never: list[tuple[dict[str, Any], str]] = []
    for doc in docs:
        if not isinstance(doc, Mapping) or not doc.get("event_id"):
            never.append((dict(doc) if isinstance(doc, Mapping) else {"event": doc}, "event: no event_id"))
            continue
        fields = {k: v for k, v in doc.items() if k != "weight"}
        try:
            Event.model_validate(fields)
        except ValidationError as exc:
            never.append((dict(doc), "; ".join(describe_validation(exc, "event"))))
            continue
        keep.append(dict(doc))
    return keep, never


def record_events(es: Elasticsearch, settings: Settings, events: Sequence[Mapping[str, Any]]) -> BulkReport:
    """Write event documents (as produced by event_document) into the events alias."""
    alias = alias_name(settings, "events")

    def actions() -> Iterator[dict[str, Any]]:
        for doc in events:
            yield {"_op_type": "index", "_index": alias, "_id": doc["event_id"], "_source": dict(doc)}

    # If the alias is missing, fail (and retry) rather than auto-create a concrete index under the
    # alias name, which would block the alias for good.
    return run_bulk(es, actions(), require_alias=True)


def scan_events(es: Elasticsearch, settings: Settings, user_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Every stored event (optionally one user's), in no particular order."""
    query: dict[str, Any] = {"term": {"user_id": user_id}} if user_id else {"match_all": {}}
    for hit in scan(es, index=alias_name(settings, "events"), query={"query": query}, size=1000, scroll="2m"):
        yield hit["_source"]
