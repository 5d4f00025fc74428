"""Items rollback: back to the version that was live before, brought up to date with the writes made since.

A rollback undoes a version's structure (its mapping, settings, embedding model), never the data written
meanwhile. The target, the version the alias left last (`lifecycle.rollback_target`), missed every write
made while the live version served. So, before the swap, it is marked as building (live writes reach both
from then on, as during a reindex), the documents that differ are replayed from the live version into it
through the reindex's own document build (embedding again only where the text or the model changed), the
documents deleted since are deleted from it, and the counts and a sample kNN are verified. Only then does
the alias move. This was chosen over writing every item twice forever (to a standby version): a rollback
is rare and may take the time of a pass over the catalog; every write paying double is not.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan

from indexer import lifecycle
from indexer.bulk import batches, run_bulk
from indexer.catalog import IndexResult, Progress, _copy_batch, _verify
from indexer.cf_fields import SLOTS, model_field
from indexer.encoder import Encoder
from indexer.errors import BackendUnavailable, Conflict
from indexer.promotion import SOURCE_FIELDS
from indexer.settings import Settings

__all__ = ["rollback"]

MODEL_FIELDS = [model_field(slot) for slot in SLOTS]
# The first pass copies what differs; the second catches writes that were on their way while the target
# was being marked (they chose their targets before it was) and anything the first pass raced with.
PASSES = 2


def rollback(es: Elasticsearch, settings: Settings, encoder: Encoder, progress: Progress | None = None,
             batch: int = 500) -> dict[str, Any]:
    """Point the items alias back at the version that was live before, with every write made since."""
    current, target = lifecycle.rollback_target(es, settings)
    building = [v.name for v in lifecycle.list_versions(es, settings) if v.is_building]
    if building and building != [target.name]:  # the target itself: a rollback whose worker died, resumed
        raise Conflict(f"{building[0]} is being built by a reindex: roll back once it has finished")
    # Fields added to the mapping since the target was built (never changed ones): the copies may carry them.
    lifecycle.add_missing_fields(es, settings, "items", target.name)
    lifecycle.set_building(es, settings, target.name)
    result = IndexResult()
    deleted = 0
    try:
        for _ in range(PASSES):
            deleted += _catch_up(es, current.name, target.name, encoder, result, batch, progress)
        _verify(es, current.name, target.name)
    except Exception:
        # The alias never moved; the target keeps what it was given (every copy is a valid, newer state).
        lifecycle.set_building(es, settings, None)
        raise
    lifecycle.swap_alias(es, settings, target.name)
    lifecycle.set_building(es, settings, None)
    return {"from": current.name, "to": target.name, "copied": result.indexed, "embedded": result.embedded,
            "deleted": deleted}


def _hits(es: Elasticsearch, index: str, **options: Any) -> Iterator[dict[str, Any]]:
    yield from scan(es.options(request_timeout=120), index=index, query={"query": {"match_all": {}}}, size=500,
                    version=True, scroll="5m", **options)


def _catch_up(es: Elasticsearch, source: str, target: str, encoder: Encoder, result: IndexResult, batch: int,
              progress: Progress | None) -> int:
    """One pass: copy into `target` every document of `source` it lacks or holds at another version or with
    other model fields; delete from `target` what `source` no longer holds. Returns the deletions."""
    es.indices.refresh(index=[source, target])
    total = int(es.count(index=source)["count"])
    done = 0
    for hits in batches(_hits(es, source, source_includes=SOURCE_FIELDS), batch):
        held = _stored(es, target, [h["_id"] for h in hits])
        stale = [h for h in hits if held.get(h["_id"]) != _state(h)]
        if stale:
            _copy_batch(es, target, stale, encoder, result)
        done += len(hits)
        if progress:
            progress(done, total)
    deleted = 0
    for hits in batches(_hits(es, target, source=False), batch):
        ids = [h["_id"] for h in hits]
        # Asked of the source now, not remembered from its scan: an item created since is in both.
        gone = set(ids) - set(_stored(es, source, ids))
        actions = [{"_op_type": "delete", "_index": target, "_id": h["_id"], "version": h["_version"],
                    "version_type": "external_gte"} for h in hits if h["_id"] in gone]
        if actions:
            deleted += run_bulk(es, actions).ok
    return deleted


def _state(hit: dict[str, Any]) -> tuple[int, tuple[Any, ...]]:
    source = hit.get("_source", {})
    return int(hit["_version"]), tuple(source.get(name) for name in MODEL_FIELDS)


def _stored(es: Elasticsearch, index: str, ids: list[str]) -> dict[str, tuple[int, tuple[Any, ...]]]:
    """Version and model fields of the ids `index` holds."""
    if not ids:
        return {}
    response = es.mget(index=index, ids=ids, source_includes=MODEL_FIELDS)
    failed = [d for d in response["docs"] if "error" in d]
    if failed:  # a shard that does not answer is not a missing document: deciding on it would delete
        raise BackendUnavailable(f"{len(failed)} documents of {index} unreadable: {failed[0]['error']}")
    return {d["_id"]: _state(d) for d in response["docs"] if d.get("found")}
