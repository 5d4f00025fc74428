"""run_bulk with several chunks in flight (what a model promotion uses): every action is written once, one
that Elasticsearch refuses for its whole request is still isolated alone, and a generator feeds it. Real node."""
from __future__ import annotations

import threading

import pytest

from indexer import bulk
from tests.helpers import PREFIX

pytestmark = pytest.mark.integration

EMOJI_ID = "\U0001f600" * 200  # an 800-byte id: Elasticsearch refuses the whole bulk request for it


@pytest.fixture()
def scratch(es):
    name = f"{PREFIX}-bulk-threads"
    es.options(ignore_status=404).indices.delete(index=name)
    es.indices.create(index=name, mappings={"properties": {"n": {"type": "integer"}}})
    yield name
    es.options(ignore_status=404).indices.delete(index=name)


def test_threads_write_every_action_once_and_isolate_a_refused_request(es, scratch, monkeypatch):
    monkeypatch.setattr(bulk, "CHUNK_SIZE", 50)  # 41 chunks over 4 threads
    drawn_by: set[str] = set()

    def actions():
        for n in range(2_050):
            drawn_by.add(threading.current_thread().name)
            doc_id = EMOJI_ID if n == 1_234 else f"d{n}"
            yield {"_op_type": "index", "_index": scratch, "_id": doc_id, "_source": {"n": n},
                   "version": 7, "version_type": "external_gte"}

    report = bulk.run_bulk(es, actions(), threads=4)
    assert report.ok == 2_049 and report.stale == 0
    assert [f["id"] for f in report.failed] == [EMOJI_ID] and report.failed[0]["status"] == 400
    assert len(drawn_by) > 1  # the chunks were really drawn by several threads
    es.indices.refresh(index=scratch)
    assert es.count(index=scratch)["count"] == 2_049
    # Older versions of the same documents are stale, each counted once; d1234 (never written) is new.
    again = bulk.run_bulk(es, ({"_op_type": "index", "_index": scratch, "_id": f"d{n}", "_source": {"n": n},
                                "version": 6, "version_type": "external_gte"} for n in range(2_050)), threads=3)
    assert (again.ok, again.stale, again.failed) == (1, 2_049, [])


def test_an_error_in_one_thread_stops_the_others_and_reaches_the_caller(es, scratch, monkeypatch):
    monkeypatch.setattr(bulk, "CHUNK_SIZE", 10)
    drawn = 0

    def actions():
        nonlocal drawn
        for n in range(10_000):
            drawn += 1
            if n == 25:
                raise RuntimeError("the source scan failed")
            yield {"_op_type": "index", "_index": scratch, "_id": f"e{n}", "_source": {"n": n}}

    with pytest.raises(RuntimeError, match="source scan failed"):
        bulk.run_bulk(es, actions(), threads=3)
    assert drawn == 26  # nobody kept drawing after the failure
