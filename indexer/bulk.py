"""Bulk writes through elasticsearch-py's streaming_bulk, with external versioning and per-item outcomes."""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import ApiError, Elasticsearch
from elasticsearch.helpers import streaming_bulk

from indexer.cf_fields import CF_FIELDS
from indexer.documents import Existing
from indexer.errors import BackendUnavailable

# Rejections (429) are retried by the helper, and only the rejected documents; other
# failures are reported per item. The client itself does not retry (see clients.make_es).
BULK_RETRIES = 5
CHUNK_SIZE = 500
CHUNK_BYTES = 20 * 1024 * 1024
# Statuses with which Elasticsearch refuses a bulk request as a whole for what one action holds.
REQUEST_REFUSALS = (400, 413)
MAX_REASON_CHARS = 500


@dataclass
class BulkReport:
    ok: int = 0
    stale: int = 0  # rejected because the index already holds a newer version: the right outcome
    failed: list[dict[str, Any]] = field(default_factory=list)


def batches(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most `size` rows."""
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_bulk(es: Elasticsearch, actions: Iterable[dict[str, Any]], *, require_alias: bool = False,
             threads: int = 1) -> BulkReport:
    """Run actions through streaming_bulk; with require_alias every target must be an alias (a missing
    alias fails the write instead of auto-creating a concrete index under its name).

    Elasticsearch refuses some bad documents (an unparseable version, an over-long id) for the whole
    request rather than per item; such a request is split in halves until the bad action stands alone,
    so it fails by itself and every other action is written.

    With `threads` > 1, that many chunks are in flight at once, each through its own streaming_bulk with
    the same 429 retries and splitting (the helpers' parallel_bulk has neither); the actions are drawn
    from `actions` one chunk at a time under a lock, so a generator may feed it."""
    report = BulkReport()
    extra: dict[str, Any] = {"require_alias": True} if require_alias else {}  # passed on to es.bulk
    # A chunk's worth at a time: a promotion streams the whole catalog through here, and only one chunk
    # may need to be split again.
    chunks = batches(actions, CHUNK_SIZE)
    if threads <= 1:
        for chunk in chunks:
            _bulk_isolating(es, chunk, report, extra)
        return report
    draw, failed = threading.Lock(), threading.Event()

    def consume() -> BulkReport:
        part = BulkReport()
        try:
            while not failed.is_set():
                with draw:
                    chunk = next(chunks, None)
                if chunk is None:
                    break
                _bulk_isolating(es, chunk, part, extra)
        except Exception:
            failed.set()  # the other threads stop drawing: the caller sees this error
            raise
        return part

    with ThreadPoolExecutor(threads, thread_name_prefix="bulk") as pool:
        futures = [pool.submit(consume) for _ in range(threads)]
    for future in futures:
        part = future.result()
        report.ok += part.ok
        report.stale += part.stale
        report.failed.extend(part.failed)
    return report


def _bulk_isolating(es: Elasticsearch, actions: list[dict[str, Any]], report: BulkReport,
                    extra: dict[str, Any]) -> None:
    done = 0
    try:
        for ok, result in streaming_bulk(
            es, actions, chunk_size=CHUNK_SIZE, max_chunk_bytes=CHUNK_BYTES, raise_on_error=False,
            raise_on_exception=True, max_retries=BULK_RETRIES, initial_backoff=0.5, max_backoff=10, **extra,
        ):
            done += 1
            _tally(report, ok, result)
    except ApiError as exc:
        if exc.status_code >= 500:
            raise BackendUnavailable(f"Elasticsearch answered {exc.status_code} to a bulk request") from exc
        if exc.status_code not in REQUEST_REFUSALS:
            raise
        # Chunks run in order and every action of a finished chunk has been reported: the refused
        # request is among the actions not reported yet.
        rest = actions[done:]
        if len(rest) == 1:
            report.failed.append({"id": rest[0].get("_id"), "index": rest[0].get("_index"),
                                  "status": exc.status_code, "error": _request_reason(exc)})
            return
        middle = len(rest) // 2
        _bulk_isolating(es, rest[:middle], report, extra)
        _bulk_isolating(es, rest[middle:], report, extra)


def _tally(report: BulkReport, ok: bool, result: Mapping[str, Any]) -> None:
    op, info = next(iter(result.items()))
    if ok:
        report.ok += 1
    elif info.get("status") == 409:
        report.stale += 1
    elif op == "delete" and info.get("status") == 404:
        report.ok += 1  # already gone: a delete is idempotent
    else:
        report.failed.append({"id": info.get("_id"), "index": info.get("_index"), "status": info.get("status"),
                              "error": _item_reason(info.get("error"))})


def _item_reason(error: Any) -> str:
    """Elasticsearch's reason for one refused document, with its cause (which names the broken limit)."""
    if not isinstance(error, Mapping):
        return str(error)[:MAX_REASON_CHARS]
    reason = str(error.get("reason") or error.get("type"))
    cause = error.get("caused_by")
    if isinstance(cause, Mapping) and cause.get("reason"):
        reason = f"{reason}: {cause['reason']}"
    return reason[:MAX_REASON_CHARS]


def _request_reason(exc: ApiError) -> str:
    body = exc.body if isinstance(exc.body, Mapping) else {}
    error = body.get("error")
    return _item_reason(error) if error else f"Elasticsearch refused the request ({exc.status_code})"


def index_documents(es: Elasticsearch, indices: Sequence[str], documents: Sequence[Mapping[str, Any]]) -> BulkReport:
    """Write documents (each carries `id` and `_version`) into every index in `indices`.

    version_type external_gte: replaying the same batch rewrites identical documents (idempotent),
    and an older version than the stored one is refused with 409 (counted as stale, not failed).
    """
    def actions() -> Iterator[dict[str, Any]]:
        for index in indices:
            for doc in documents:
                source = {k: v for k, v in doc.items() if k != "_version"}
                yield {"_op_type": "index", "_index": index, "_id": doc["id"], "_source": source,
                       "version": doc["_version"], "version_type": "external_gte"}

    return run_bulk(es, actions())


def delete_documents(es: Elasticsearch, indices: Sequence[str], ids: Sequence[str], version: int) -> BulkReport:
    """Delete ids from every index; the external `version` (epoch ms of the request) keeps an older
    update that arrives later from resurrecting the item, within the index's gc_deletes window."""
    def actions() -> Iterator[dict[str, Any]]:
        for index in indices:
            for item_id in ids:
                yield {"_op_type": "delete", "_index": index, "_id": item_id, "version": version,
                       "version_type": "external_gte"}

    return run_bulk(es, actions())


def fetch_existing(es: Elasticsearch, index: str, ids: Sequence[str]) -> dict[str, Existing]:
    """text_hash, embedding, model fields of the ids already in `index`."""
    if not ids:
        return {}
    response = es.mget(index=index, ids=list(dict.fromkeys(ids)),
                       source_includes=["text_hash", "embedding_model", "embedding", *CF_FIELDS])
    return {doc["_id"]: Existing.from_source(doc.get("_source", {})) for doc in response["docs"] if doc.get("found")}
