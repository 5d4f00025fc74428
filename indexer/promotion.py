"""Promotion and rollback of collaborative models, with zero downtime.

Items carry two slots of model fields. A new model is written into the slot that is not serving, item by
item, each document rewritten whole at its own external version (`external_gte` with the version it
already has), so item updates keep their ordering: a concurrent newer update wins the race and the item
is simply written again. Reads keep using the serving slot the whole time; the pointer flips in one
document write once every item carries the new fields. A worker killed mid-way leaves the serving slot
and the pointer untouched; running the promotion again finishes the slot.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan

from indexer import lifecycle
from indexer import model_registry as registry
from indexer.bulk import run_bulk
from indexer.cf_fields import CF_FIELDS, factors_field, model_field, neighbours_field, slot_fields
from indexer.cf_serving import ServingModel
from indexer.errors import Conflict
from indexer.settings import Settings

__all__ = ["SOURCE_FIELDS", "promote", "rollback"]

Progress = Callable[[str, float], None]
# Vectors are left out of _source unless named (index.mapping.exclude_source_vectors), so a rewrite asks
# for every field by name: nothing of the document may be lost when it is written back.
SOURCE_FIELDS = ["*", "embedding", *CF_FIELDS]
MAX_PASSES = 5


def _documents(es: Elasticsearch, index: str, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from scan(es.options(request_timeout=120), index=index, query={"query": query}, size=500,
                    version=True, source_includes=SOURCE_FIELDS, scroll="5m")


def _rewrite(model: ServingModel, hit: dict[str, Any], index: str) -> dict[str, Any]:
    source = {k: v for k, v in hit["_source"].items()
              if k not in (model_field(model.slot), neighbours_field(model.slot), factors_field(model.slot))}
    row = model.row.get(hit["_id"])
    neighbours: dict[str, float] | None
    if row is not None:
        factors = model.artifacts.factors[row]
        start, end = model.incoming.indptr[row], model.incoming.indptr[row + 1]
        neighbours = {model.artifacts.item_ids[i]: float(w)
                      for i, w in zip(model.incoming.indices[start:end], model.incoming.data[start:end], strict=True)}
    else:
        factors = model.cold_factors(source.get("embedding"))
        neighbours = model.cold_neighbours(factors)
    source.update(slot_fields(model.slot, model.version, factors, neighbours))
    return {"_op_type": "index", "_index": index, "_id": hit["_id"], "_source": source,
            "version": hit["_version"], "version_type": "external_gte"}


def write_slot(es: Elasticsearch, settings: Settings, model: ServingModel,
               progress: Progress | None = None) -> dict[str, int]:
    """Give every item (live index, and a version being built) this model's fields in its slot.

    Passes repeat over the items whose slot does not yet name this model: an item updated during a pass
    (409: its version moved on) or written by the old code path is picked up by the next one."""
    written = stale = 0
    for index in lifecycle.write_targets(es, settings):
        pending = {"bool": {"must_not": [{"term": {model_field(model.slot): model.version}}]}}
        for attempt in range(MAX_PASSES + 1):
            es.indices.refresh(index=index)
            if int(es.count(index=index, query=pending)["count"]) == 0:
                break
            if attempt == MAX_PASSES:
                raise Conflict(f"items in {index} kept changing: model {model.version} not complete after "
                               f"{MAX_PASSES} passes")
            report = run_bulk(es, (_rewrite(model, hit, index) for hit in _documents(es, index, pending)),
                              threads=settings.promotion_bulk_threads)
            if report.failed:
                raise Conflict(f"{len(report.failed)} items could not take model {model.version}: "
                               f"{report.failed[:2]}")
            written += report.ok
            stale += report.stale
            if progress:
                progress(f"writing slot {model.slot} into {index}", min(1.0, (attempt + 1) / 2))
    return {"written": written, "retried_after_update": stale}


def _model(es: Elasticsearch, settings: Settings, version: int, slot: str) -> ServingModel:
    info = registry.load_model(es, settings, version)
    if info is None:
        raise Conflict(f"model version {version} does not exist")
    if info.state == "refused":
        raise Conflict(f"model version {version} was refused by the gate and is never served: {info.reason}")
    return ServingModel(version, slot, info.info, registry.load_artifacts(es, settings, version))


def promote(es: Elasticsearch, settings: Settings, version: int, progress: Progress | None = None,
            *, rollback_to: bool = False) -> dict[str, Any]:
    """Write `version` into the idle slot, then point serving at it. Returns what was done."""
    started = time.perf_counter()
    pointer = registry.read_pointer(es, settings)
    if pointer.version == version:
        return {"version": version, "slot": pointer.slot, "unchanged": True}
    slot = pointer.inactive_slot()
    model = _model(es, settings, version, slot)
    if pointer.slots.get(slot) != version:
        # Announce the slot's new content first, so item writes from now on fill it for new items too.
        pointer = registry.write_pointer(es, settings, registry.Pointer(
            pointer.version, pointer.slot, {**pointer.slots, slot: version}, pointer.history), pointer)
    counts = write_slot(es, settings, model, progress)
    history = pointer.history[:-1] if rollback_to else (
        (*pointer.history, pointer.version) if pointer.version is not None else pointer.history)
    registry.write_pointer(es, settings, registry.Pointer(version, slot, {**pointer.slots, slot: version},
                                                          tuple(history)[-20:]), pointer)
    if pointer.version is not None:
        registry.set_state(es, settings, pointer.version, "retired")
    registry.set_state(es, settings, version, "serving")
    return {"version": version, "slot": slot, "previous": pointer.version, **counts,
            "seconds": round(time.perf_counter() - started, 2)}


def rollback(es: Elasticsearch, settings: Settings, progress: Progress | None = None) -> dict[str, Any]:
    """Serve the model that served before the current one again (its slot is usually still intact, so
    only items written since are completed)."""
    pointer = registry.read_pointer(es, settings)
    if not pointer.history:
        raise Conflict("no earlier model has served: nothing to roll back to")
    target = pointer.history[-1]
    result = promote(es, settings, target, progress, rollback_to=True)
    return {"from": pointer.version, "to": target, **result}
