"""Catalog writes: index and delete items, and rebuild the items index as a new version (reindex)."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan

from indexer import lifecycle
from indexer.bulk import BulkReport, delete_documents, fetch_existing, index_documents
from indexer.cf_fields import CF_FIELDS, model_field, slot_fields
from indexer.cf_serving import ServingModel
from indexer.documents import Existing, Item, build_documents
from indexer.encoder import Encoder, item_text, text_hash
from indexer.errors import IndexVerificationFailed
from indexer.settings import Settings

Progress = Callable[[int, int], None]


@dataclass
class IndexResult:
    embedded: int = 0
    reused: int = 0
    indexed: int = 0
    stale: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def index_items(es: Elasticsearch, settings: Settings, items: Sequence[Item], encoder: Encoder,
                models: Mapping[str, ServingModel] | None = None) -> IndexResult:
    """Embed what changed and write the items into the live index (and a version being built).

    `models` are the collaborative models each slot holds: an item they never saw gets factors mapped
    from its content, so it can be recommended before anyone touches it."""
    targets = lifecycle.write_targets(es, settings)
    if not targets:
        targets = [lifecycle.ensure_indices(es, settings)["items"]]
    existing = fetch_existing(es, targets[0], [item.id for item in items])
    build = build_documents(items, existing, encoder.model_id, encoder.encode)
    for slot, model in (models or {}).items():
        for doc in build.documents:
            if doc.get(model_field(slot)) != model.version:
                factors = model.cold_factors(doc.get("embedding"))
                doc.update(slot_fields(slot, model.version, factors, model.cold_neighbours(factors)))
    report = index_documents(es, targets, build.documents)
    # A write reaches every target; count per item, not per (item, index) pair.
    per_target = max(1, len(targets))
    return IndexResult(embedded=build.embedded, reused=build.reused, indexed=report.ok // per_target,
                       stale=report.stale // per_target, failed=_once_per_item(report.failed))


def _once_per_item(failed: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One failure per item id: an item refused by the live index and the one being built is one refusal."""
    first: dict[Any, dict[str, Any]] = {}
    for failure in failed:
        first.setdefault(failure.get("id"), failure)
    return list(first.values())


def delete_items(es: Elasticsearch, settings: Settings, ids: Sequence[str], version_ms: int) -> BulkReport:
    return delete_documents(es, lifecycle.write_targets(es, settings), ids, version_ms)


def load_items(es: Elasticsearch, settings: Settings, ids: Sequence[str]) -> tuple[list[Item], list[str]]:
    """The stored items with these ids (at their stored version), and the ids that are not in the index."""
    if not ids:
        return [], []
    response = es.mget(index=lifecycle.alias_name(settings, "items"), ids=list(dict.fromkeys(ids)))
    found = [_doc_to_item(d["_source"], int(d["_version"])) for d in response["docs"] if d.get("found")]
    missing = [d["_id"] for d in response["docs"] if not d.get("found")]
    return found, missing


def _doc_to_item(source: dict[str, Any], version: int) -> Item:
    fields = {k: v for k, v in source.items() if k in Item.model_fields and k != "version"}
    fields["version"] = version
    return Item.model_validate(fields)


def reindex(es: Elasticsearch, settings: Settings, encoder: Encoder, progress: Progress | None = None,
            batch: int = 500) -> dict[str, Any]:
    """Build the next items version from the current one, embedding again only where the text or the
    model changed; verify it, swap the alias atomically, keep old versions for rollback."""
    source = lifecycle.current_index(es, settings) or lifecycle.ensure_indices(es, settings)["items"]
    es.indices.refresh(index=source)
    total = int(es.count(index=source)["count"])
    building = [v.name for v in lifecycle.list_versions(es, settings) if v.is_building]
    # A version still marked as building was left by a reindex whose worker died: resume it (copies
    # are idempotent, external versions decide), rather than leaving it orphaned.
    target = building[-1] if building else lifecycle.create_version(es, settings)
    lifecycle.set_building(es, settings, target)
    result = IndexResult()
    done = 0
    try:
        pending: list[dict[str, Any]] = []
        hits = scan(es.options(request_timeout=60), index=source, query={"query": {"match_all": {}}}, size=batch,
                    version=True, source_includes=["*", "embedding", *CF_FIELDS], scroll="5m")
        for hit in hits:
            pending.append(hit)
            if len(pending) >= batch:
                _copy_batch(es, target, pending, encoder, result)
                done += len(pending)
                pending = []
                if progress:
                    progress(done, total)
        if pending:
            _copy_batch(es, target, pending, encoder, result)
            done += len(pending)
            if progress:
                progress(done, total)
        _verify(es, source, target)
    except Exception:
        # A failed build (not a killed worker) is dropped: the alias never pointed at it.
        lifecycle.set_building(es, settings, None)
        es.options(ignore_status=404).indices.delete(index=target)
        raise
    previous = lifecycle.swap_alias(es, settings, target)
    lifecycle.set_building(es, settings, None)
    pruned = lifecycle.prune_versions(es, settings)
    return {"source": previous, "target": target, "documents": done, "pruned": pruned, **result.as_dict()}


def _copy_batch(es: Elasticsearch, target: str, hits: list[dict[str, Any]], encoder: Encoder,
                result: IndexResult) -> None:
    items = [_doc_to_item(hit["_source"], int(hit["_version"])) for hit in hits]
    existing = {
        hit["_id"]: Existing.from_source(hit["_source"])
        for hit in hits
        # A stored hash that no longer matches the template must not be trusted.
        if hit["_source"].get("text_hash") == text_hash(item_text(hit["_source"].get("title", ""),
                                                                  hit["_source"].get("description"),
                                                                  hit["_source"].get("tags")))
    }
    build = build_documents(items, existing, encoder.model_id, encoder.encode)
    report = index_documents(es, [target], build.documents)
    result.embedded += build.embedded
    result.reused += build.reused
    result.indexed += report.ok
    result.stale += report.stale
    result.failed.extend(report.failed)
    if report.failed:
        raise IndexVerificationFailed(f"{len(report.failed)} documents failed to copy into {target}: "
                                      f"{report.failed[:3]}")


def _verify(es: Elasticsearch, source: str, target: str, attempts: int = 5) -> None:
    """Counts must match (live writes reach both indices) and a sample kNN must find its own document."""
    for attempt in range(attempts):
        es.indices.refresh(index=[source, target])
        source_count = int(es.count(index=source)["count"])
        target_count = int(es.count(index=target)["count"])
        if source_count == target_count:
            break
        time.sleep(0.5 * (attempt + 1))
    else:
        raise IndexVerificationFailed(f"{target} holds {target_count} documents, {source} holds {source_count}")
    if target_count == 0:
        return
    sample = es.search(index=target, size=1, query={"function_score": {"random_score": {}}},
                       source_includes=["embedding"])["hits"]["hits"]
    vector = sample[0]["_source"].get("embedding") if sample else None
    if not vector:
        sample_id = sample[0]["_id"] if sample else "?"
        raise IndexVerificationFailed(f"sample document {sample_id} in {target} has no vector")
    knn = es.search(index=target, knn={"field": "embedding", "query_vector": vector, "k": 5, "num_candidates": 50},
                    size=5, source=False)["hits"]["hits"]
    if sample[0]["_id"] not in [h["_id"] for h in knn]:
        raise IndexVerificationFailed(f"kNN on {target} did not find document {sample[0]['_id']} from its own vector")
