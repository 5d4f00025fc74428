"""The embedded node is real Elasticsearch: version, kNN with a filter, BM25 ranking."""
from __future__ import annotations

import numpy as np
import pytest
from elasticsearch import helpers

pytestmark = pytest.mark.integration


def test_info_reports_elasticsearch_9(es):
    info = es.info()
    assert info["version"]["number"].startswith("9.")
    assert info["tagline"] == "You Know, for Search"


@pytest.fixture()
def scratch(es):
    name = "hrtest-scratch-node"
    es.options(ignore_status=404).indices.delete(index=name)
    yield name
    es.options(ignore_status=404).indices.delete(index=name)


def _unit(v):
    v = np.asarray(v, dtype=float)
    return (v / np.linalg.norm(v)).tolist()


def test_knn_with_filter_returns_nearest_allowed_neighbour(es, scratch):
    es.indices.create(index=scratch, mappings={"properties": {
        "colour": {"type": "keyword"},
        "v": {"type": "dense_vector", "dims": 4, "similarity": "dot_product",
              "index_options": {"type": "int8_hnsw"}}}})
    docs = {
        "red-near": ("red", [1, 0.05, 0, 0]),
        "blue-nearest": ("blue", [1, 0.01, 0, 0]),
        "red-far": ("red", [0, 0, 1, 0]),
        "blue-far": ("blue", [0, 1, 0, 0]),
    }
    helpers.bulk(es, ({"_index": scratch, "_id": k, "colour": c, "v": _unit(v)} for k, (c, v) in docs.items()),
                 refresh=True)
    query = _unit([1, 0, 0, 0])
    unfiltered = es.search(index=scratch, knn={"field": "v", "query_vector": query, "k": 1, "num_candidates": 10})
    assert unfiltered["hits"]["hits"][0]["_id"] == "blue-nearest"
    filtered = es.search(index=scratch, knn={"field": "v", "query_vector": query, "k": 2, "num_candidates": 10,
                                             "filter": {"term": {"colour": "red"}}})
    ids = [h["_id"] for h in filtered["hits"]["hits"]]
    assert ids[0] == "red-near"
    assert all(docs[i][0] == "red" for i in ids)


def test_bm25_ranks_exact_title_match_first(es, scratch):
    es.indices.create(index=scratch, mappings={"properties": {"title": {"type": "text"}}})
    titles = ["The Matrix Reloaded", "The Matrix", "Matrix algebra for beginners and the matrix of life",
              "Toy Story", "The Lion King"]
    helpers.bulk(es, ({"_index": scratch, "_id": str(i), "title": t} for i, t in enumerate(titles)), refresh=True)
    hits = es.search(index=scratch, query={"match": {"title": "the matrix"}})["hits"]["hits"]
    assert hits[0]["_source"]["title"] == "The Matrix"
