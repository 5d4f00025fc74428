"""Item validation and Elasticsearch document building, embedding only the items whose text or model changed."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from indexer.encoder import item_text, text_hash

MAX_ID_CHARS = 256
# Elasticsearch refuses an _id over 512 bytes for the whole bulk request, not per document: count bytes.
MAX_ID_BYTES = 512
# An id is a path segment of the API (/v1/items/<id>): no whitespace, no slash.
ID_PATTERN = r"^[^\s/]+$"
MAX_TITLE_CHARS = 1_000
MAX_TAGS = 100
# External versions are Java longs, >= 0: 2**63 or more fails the whole bulk request as unparseable.
MAX_VERSION = 2**63 - 1
# The `flattened` mapping of `attributes`: at most 20 nested objects (the attributes object counts), and
# each leaf is indexed as "<key path>\0<value>", a Lucene term of at most 32,766 bytes.
MAX_ATTRIBUTE_DEPTH = 20
MAX_KEYED_TERM_BYTES = 32_766


def within_id_bytes(value: str) -> str:
    """An id Elasticsearch can store as a document _id (and as a keyword term): at most 512 UTF-8 bytes."""
    size = len(value.encode("utf-8"))
    if size > MAX_ID_BYTES:
        raise ValueError(f"is {size} bytes in UTF-8; the limit is {MAX_ID_BYTES} bytes")
    return value


IdBytes = AfterValidator(within_id_bytes)


def check_flattened(attributes: Mapping[str, Any]) -> None:
    """Raise ValueError, naming the key, where `attributes` breaks Elasticsearch's `flattened` limits (which
    would refuse the document after the API accepted it). Iterative: the depth may be anything."""
    stack: list[tuple[str, Any, int]] = [("", attributes, 1)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, Mapping):
            if depth > MAX_ATTRIBUTE_DEPTH:
                raise ValueError(f"{path or 'attributes'}: objects nested more than {MAX_ATTRIBUTE_DEPTH} levels deep "
                                 f"(the flattened field's depth limit)")
            stack.extend((f"{path}.{key}" if path else str(key), child, depth + 1) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((path, child, depth) for child in value)
        elif value is not None:
            size = len(path.encode("utf-8")) + 1 + len(str(value).encode("utf-8"))
            if size > MAX_KEYED_TERM_BYTES:
                raise ValueError(f"{path}: key and value take {size} bytes; the flattened field's limit is "
                                 f"{MAX_KEYED_TERM_BYTES} bytes (key path + 1 + value, in UTF-8)")


class Item(BaseModel):
    """One catalog item as clients send it. Unknown fields are refused; free-form data goes in `attributes`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN), IdBytes]
    title: Annotated[StrictStr, Field(min_length=1, max_length=MAX_TITLE_CHARS)]
    description: StrictStr = ""
    category: Annotated[StrictStr, Field(max_length=256)] | None = None
    tags: Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=128)]], Field(max_length=MAX_TAGS)] = []
    price: Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)] | None = None
    in_stock: StrictBool = True
    popularity: Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)] = 0.0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: Annotated[StrictInt, Field(ge=0, le=MAX_VERSION)] | None = None
    attributes: dict[StrictStr, Any] = {}

    @field_validator("attributes")
    @classmethod
    def _flattened_limits(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_flattened(value)
        return value

    def text(self) -> str:
        return item_text(self.title, self.description, self.tags)

    def doc_version(self) -> int:
        """External version for Elasticsearch: the explicit version, else updated_at in epoch milliseconds.

        Tasks may run out of order; with external versioning an older update never overwrites a newer one.
        """
        if self.version is not None:
            return self.version
        stamp = self.updated_at or self.created_at
        if stamp is None:
            raise ValueError(f"item {self.id}: needs version or updated_at (the API stamps updated_at on arrival)")
        return int(_aware(stamp).timestamp() * 1000)


@dataclass(frozen=True)
class RecordError:
    """Why one record (an item or an event) of a batch was refused; the other records are unaffected."""

    index: int
    id: str | None
    errors: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "errors": self.errors}


def describe_validation(exc: ValidationError, subject: str = "item") -> list[str]:
    """One 'field.path: message' line per problem; `subject` names an error about the whole object."""
    return [f"{'.'.join(str(p) for p in err['loc']) or subject}: {err['msg']}" for err in exc.errors()]


# Decay and trending weigh an event by its time, and an item's time is its external version when it has no
# explicit one: a stamp far ahead would outweigh every real event, or pin the item against every later
# update. Allow only clock skew.
MAX_FUTURE_SKEW = timedelta(minutes=5)


def validate_items(raw: Iterable[Any], *, max_text_chars: int, stamp_missing: bool = False,
                   now: datetime | None = None) -> tuple[list[Item], list[RecordError]]:
    """Split a batch into valid items and per-item errors. With stamp_missing, items that carry
    neither version nor updated_at get updated_at = now (the moment the API accepted them)."""
    valid: list[Item] = []
    errors: list[RecordError] = []
    now = now or datetime.now(UTC)
    for index, entry in enumerate(raw):
        raw_id = entry.get("id") if isinstance(entry, Mapping) else None
        shown_id = raw_id if isinstance(raw_id, str) else None
        if not isinstance(entry, Mapping):
            errors.append(RecordError(index, None, [f"item: expected a JSON object, got {type(entry).__name__}"]))
            continue
        try:
            item = Item.model_validate(dict(entry))
        except ValidationError as exc:
            errors.append(RecordError(index, shown_id, describe_validation(exc)))
            continue
        if len(item.text()) > max_text_chars:
            errors.append(RecordError(index, item.id, [f"text: title+description+tags is {len(item.text())} "
                                                       f"characters, the limit is {max_text_chars}"]))
            continue
        if stamp_missing and item.version is None and item.updated_at is None:
            item = item.model_copy(update={"updated_at": now})
        if item.version is None and (item.updated_at or item.created_at) and item.doc_version() < 0:
            # A negative external version fails the whole bulk request. Deriving one (0, say) would make
            # every pre-1970 update of the item equal and let an older one win: ask for a version instead.
            stamp_field = "updated_at" if item.updated_at is not None else "created_at"
            errors.append(RecordError(index, item.id, [f"{stamp_field}: before 1970 and no version; Elasticsearch "
                                                     "versions cannot be negative: send an explicit version"]))
            continue
        stamp = item.updated_at or item.created_at
        if item.version is None and stamp is not None and _aware(stamp) > now + MAX_FUTURE_SKEW:
            stamp_field = "updated_at" if item.updated_at is not None else "created_at"
            errors.append(RecordError(index, item.id, [
                f"{stamp_field}: {stamp.isoformat()} is in the future (more than {MAX_FUTURE_SKEW.seconds // 60} "
                "minutes ahead of the server clock) and, with no version, would outrank every later update: "
                "send an explicit version"]))
            continue
        valid.append(item)
    return valid, errors


def _aware(stamp: datetime) -> datetime:
    """A naive time read as UTC, as doc_version reads it."""
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Existing:
    """What the index already holds for an item: enough to decide whether to embed again, and the
    collaborative-model fields, which an update of the item's content carries over unchanged."""

    text_hash: str | None
    embedding_model: str | None
    embedding: list[float] | None
    collaborative: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_source(cls, source: Mapping[str, Any]) -> Existing:
        return cls(source.get("text_hash"), source.get("embedding_model"), source.get("embedding"),
                   {k: v for k, v in source.items() if k.startswith("cf_")})


@dataclass
class BuildReport:
    documents: list[dict[str, Any]] = field(default_factory=list)
    embedded: int = 0
    reused: int = 0


def build_documents(items: Sequence[Item], existing: Mapping[str, Existing], model_id: str,
                    encode: Callable[[Sequence[str]], np.ndarray]) -> BuildReport:
    """Elasticsearch documents for `items`; encodes (in one batch) only the texts that are new,
    changed, or were embedded by another model."""
    report = BuildReport()
    to_embed: list[int] = []
    docs: list[dict[str, Any]] = []
    for item in items:
        text = item.text()
        digest = text_hash(text)
        doc = item.model_dump(mode="json", exclude={"version"}, exclude_none=True)
        doc.update(text_hash=digest, embedding_model=model_id)
        prior = existing.get(item.id)
        if prior:
            doc.update(prior.collaborative)
        if prior and prior.text_hash == digest and prior.embedding_model == model_id and prior.embedding:
            doc["embedding"] = prior.embedding
            report.reused += 1
        else:
            to_embed.append(len(docs))
        doc["_version"] = item.doc_version()
        docs.append(doc)
    if to_embed:
        vectors = encode([items[i].text() for i in to_embed])
        for position, vector in zip(to_embed, vectors, strict=True):
            docs[position]["embedding"] = [float(x) for x in vector]
        report.embedded = len(to_embed)
    report.documents = docs
    return report
