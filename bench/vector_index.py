"""Vector index choice: recall@10 against exact search and kNN latency for int8_hnsw, bbq_hnsw and hnsw
on the same vectors and queries, in one run. Prints JSON.

The vectors are synthetic (a mixture of 200 clusters in 384 dims, normalised), because the demo catalog
is too small to tell the index types apart; queries are held-out points of the same mixture.
Usage: .venv/bin/python bench/vector_index.py [--docs 20000] [--queries 200]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from elasticsearch import Elasticsearch, helpers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def mixture(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centres), size=n)
    points = centres[picks] + rng.normal(scale=0.6 / np.sqrt(centres.shape[1]), size=(n, centres.shape[1]))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--es", default="http://127.0.0.1:9200")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(200, 384))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    docs = mixture(rng, args.docs, centres)
    queries = mixture(rng, args.queries, centres)
    exact = np.argsort(-(queries @ docs.T), axis=1)[:, :10]

    es = Elasticsearch(args.es, request_timeout=300)
    results = []
    for kind in ("int8_hnsw", "bbq_hnsw", "hnsw"):
        index = f"hrbench-vectors-{kind.replace('_', '-')}"
        es.options(ignore_status=404).indices.delete(index=index)
        es.indices.create(index=index, settings={"number_of_shards": 1, "number_of_replicas": 0},
                          mappings={"properties": {"v": {"type": "dense_vector", "dims": 384,
                                                         "similarity": "dot_product",
                                                         "index_options": {"type": kind}}}})
        start = time.perf_counter()
        helpers.bulk(es, ({"_index": index, "_id": str(i), "v": docs[i].tolist()} for i in range(len(docs))),
                     chunk_size=1000)
        es.indices.refresh(index=index)
        es.indices.forcemerge(index=index, max_num_segments=1)
        build_s = time.perf_counter() - start
        recalls, latencies, took = [], [], []
        for q in range(len(queries)):
            began = time.perf_counter()
            response = es.search(index=index, knn={"field": "v", "query_vector": queries[q].tolist(), "k": 10,
                                                   "num_candidates": 100}, size=10, source=False)
            latencies.append((time.perf_counter() - began) * 1000)
            took.append(response["took"])
            found = {int(h["_id"]) for h in response["hits"]["hits"]}
            recalls.append(len(found & set(exact[q].tolist())) / 10)
        size = es.indices.stats(index=index, metric="store")["indices"][index]["primaries"]["store"]["size_in_bytes"]
        es.indices.delete(index=index)
        results.append({"index_type": kind, "recall_at_10": round(statistics.mean(recalls), 4),
                        "client_p50_ms": round(statistics.median(latencies), 2),
                        "client_p99_ms": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))], 2),
                        "es_took_mean_ms": round(statistics.mean(took), 2), "build_s": round(build_s, 1),
                        "store_mib": round(size / 2**20, 1)})
    print(json.dumps({"benchmark": "vector_index", "docs": args.docs, "queries": args.queries, "k": 10,
                      "num_candidates": 100, "results": results}, indent=2))


if __name__ == "__main__":
    main()
