"""Collaborative model versions in Elasticsearch (the models index): metadata and gate verdicts, the
artifacts as binary chunks, and the serving pointer (which version serves, from which item-field slot).

Everything a worker or an API process needs to serve or restore a model lives here, on the cluster, so
no process depends on another's disk.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch, NotFoundError
from scipy.sparse import csr_matrix

from indexer.cf_fields import SLOTS, model_field
from indexer.errors import NotFound
from indexer.lifecycle import alias_name
from indexer.settings import Settings

__all__ = ["Artifacts", "ModelInfo", "Pointer", "SLOTS", "list_models", "load_artifacts", "load_model",
           "next_version", "read_pointer", "save_model", "set_state", "write_pointer"]

CHUNK_BYTES = 4 * 1024 * 1024
POINTER_ID = "serving"


@dataclass
class Artifacts:
    """What serving a model needs: item ids (row order), item factors and their Gramian, the
    content-to-factor map for cold items, and the pruned item-item weights (source rows, CSR)."""

    item_ids: list[str]
    factors: np.ndarray
    gram: np.ndarray
    content_map: np.ndarray
    neighbours: csr_matrix
    # The strongest negative weights per target (magnitudes), subtracted when the engine re-scores the
    # item-item hits; empty for the co-occurrence model, which has none.
    negatives: csr_matrix | None = None

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        ids = np.frombuffer("\n".join(self.item_ids).encode("utf-8"), dtype=np.uint8)
        negatives = self.negatives if self.negatives is not None \
            else csr_matrix(self.neighbours.shape).astype(np.float32)
        np.savez_compressed(buffer, ids=ids, factors=self.factors, gram=self.gram, content_map=self.content_map,
                            nb_data=self.neighbours.data, nb_indices=self.neighbours.indices,
                            nb_indptr=self.neighbours.indptr, shape=np.asarray(self.neighbours.shape),
                            neg_data=negatives.data, neg_indices=negatives.indices, neg_indptr=negatives.indptr)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Artifacts:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            text = npz["ids"].tobytes().decode("utf-8")
            rows, columns = (int(x) for x in npz["shape"])
            shape = (rows, columns)
            neighbours = csr_matrix((npz["nb_data"], npz["nb_indices"], npz["nb_indptr"]), shape=shape)
            negatives = csr_matrix((npz["neg_data"], npz["neg_indices"], npz["neg_indptr"]), shape=shape)
            return cls(item_ids=text.split("\n") if text else [], factors=npz["factors"], gram=npz["gram"],
                       content_map=npz["content_map"], neighbours=neighbours, negatives=negatives)


@dataclass
class ModelInfo:
    """One model version: state is training, candidate, refused, serving, retired or failed."""

    version: int
    state: str
    created_at: str
    info: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    promoted_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "state": self.state, "created_at": self.created_at,
                "promoted_at": self.promoted_at, "reason": self.reason, **self.info}


@dataclass(frozen=True)
class Pointer:
    """The serving model and slot, what each slot holds, and the versions served before (newest last)."""

    version: int | None
    slot: str | None
    slots: dict[str, int | None]
    history: tuple[int, ...] = ()
    seq_no: int | None = None
    primary_term: int | None = None

    def inactive_slot(self) -> str:
        return SLOTS[1] if self.slot == SLOTS[0] else SLOTS[0]


def _index(settings: Settings) -> str:
    return alias_name(settings, "models")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def next_version(es: Elasticsearch, settings: Settings) -> int:
    """One above every version the registry or any item's slot fields name: a version number is never
    reused, even if the models index was deleted while items still carry an old model's fields."""
    response = es.search(index=_index(settings), size=0, query={"term": {"kind": "model"}},
                         aggs={"top": {"max": {"field": "version"}}})
    top = int(response["aggregations"]["top"]["value"] or 0)
    items = es.search(index=alias_name(settings, "items"), size=0,
                      aggs={slot: {"max": {"field": model_field(slot)}} for slot in SLOTS})
    for slot in SLOTS:
        top = max(top, int(items["aggregations"][slot]["value"] or 0))
    return top + 1


def save_model(es: Elasticsearch, settings: Settings, version: int, state: str, info: dict[str, Any],
               artifacts: Artifacts | None, reason: str = "") -> ModelInfo:
    """Write the artifacts (chunked) and then the metadata; `create` refuses a version that exists."""
    index = _index(settings)
    chunks = 0
    if artifacts is not None:
        raw = artifacts.to_bytes()
        for chunks, start in enumerate(range(0, len(raw), CHUNK_BYTES), start=1):
            body = {"kind": "artifact", "version": version, "chunk": chunks - 1,
                    "data": base64.b64encode(raw[start:start + CHUNK_BYTES]).decode("ascii")}
            es.options(request_timeout=120).index(index=index, id=f"model-{version}-chunk-{chunks - 1}",
                                                  document=body)
        info = {**info, "artifact_bytes": len(raw)}
    created = _now()
    es.create(index=index, id=f"model-{version}", refresh="wait_for",
              document={"kind": "model", "version": version, "state": state, "created_at": created,
                        "info": info, "reason": reason, "artifact_chunks": chunks})
    return ModelInfo(version, state, created, info, reason)


def set_state(es: Elasticsearch, settings: Settings, version: int, state: str, reason: str | None = None) -> None:
    doc: dict[str, Any] = {"state": state}
    if reason is not None:
        doc["reason"] = reason
    if state == "serving":
        doc["promoted_at"] = _now()
    es.update(index=_index(settings), id=f"model-{version}", doc=doc, refresh="wait_for")


def _info(source: dict[str, Any]) -> ModelInfo:
    return ModelInfo(int(source["version"]), source["state"], source["created_at"], dict(source.get("info") or {}),
                     source.get("reason") or "", source.get("promoted_at"))


def load_model(es: Elasticsearch, settings: Settings, version: int) -> ModelInfo | None:
    try:
        return _info(es.get(index=_index(settings), id=f"model-{version}")["_source"])
    except NotFoundError:
        return None


def list_models(es: Elasticsearch, settings: Settings, size: int = 100) -> list[ModelInfo]:
    """The newest `size` model versions, newest first."""
    response = es.search(index=_index(settings), size=size, query={"term": {"kind": "model"}},
                         sort=[{"version": "desc"}])
    return [_info(hit["_source"]) for hit in response["hits"]["hits"]]


def load_artifacts(es: Elasticsearch, settings: Settings, version: int) -> Artifacts:
    try:
        meta = es.get(index=_index(settings), id=f"model-{version}")["_source"]
    except NotFoundError:
        raise NotFound(f"model version {version} does not exist") from None
    chunks = int(meta.get("artifact_chunks") or 0)
    if not chunks:
        raise NotFound(f"model {version} has no artifacts (a refused or failed training keeps none)")
    parts = []
    for chunk in _chunk_ids(version, chunks):
        parts.append(base64.b64decode(es.options(request_timeout=120).get(index=_index(settings),
                                                                        id=chunk)["_source"]["data"]))
    return Artifacts.from_bytes(b"".join(parts))


def _chunk_ids(version: int, chunks: int) -> Iterator[str]:
    return (f"model-{version}-chunk-{n}" for n in range(chunks))


def read_pointer(es: Elasticsearch, settings: Settings) -> Pointer:
    """The serving pointer; an empty one (nothing serving) before the first promotion."""
    try:
        doc = es.get(index=_index(settings), id=POINTER_ID)
    except NotFoundError:
        return Pointer(None, None, {slot: None for slot in SLOTS})
    src = doc["_source"]
    return Pointer(src.get("version"), src.get("slot"), {s: (src.get("slots") or {}).get(s) for s in SLOTS},
                   tuple(src.get("history") or ()), int(doc["_seq_no"]), int(doc["_primary_term"]))


def write_pointer(es: Elasticsearch, settings: Settings, pointer: Pointer, expected: Pointer) -> Pointer:
    """Replace the pointer only if nobody changed it since `expected` was read (optimistic concurrency);
    raises ConflictError otherwise."""
    body = {"kind": "pointer", "version": pointer.version, "slot": pointer.slot, "slots": pointer.slots,
            "history": list(pointer.history)}
    if expected.seq_no is None:
        response = es.create(index=_index(settings), id=POINTER_ID, document=body, refresh="wait_for")
    else:
        response = es.index(index=_index(settings), id=POINTER_ID, document=body, refresh="wait_for",
                            if_seq_no=expected.seq_no, if_primary_term=expected.primary_term)
    return Pointer(pointer.version, pointer.slot, dict(pointer.slots), pointer.history,
                   int(response["_seq_no"]), int(response["_primary_term"]))

