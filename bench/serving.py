"""Serving benchmark: API latency (p50/p95/p99) and req/s from this (second) process over loopback at a
few concurrencies, beside the raw Elasticsearch msearch for the same hybrid request at the same concurrency in the same run;
plus freshness (event accepted -> next response reflects it). Prints JSON.

The catalog is synthetic at scale: random titles from a small vocabulary and random normalised
384-d vectors (the encoder is not the subject here). Users get profiles through the real event path.
The recommendation cache is disabled (HYBRIDREC_RECO_CACHE_TTL=0) so every request does the work.
Usage: .venv/bin/python bench/serving.py [--items 10000 100000] [--seconds 8] [--concurrency 1 4 8]
Needs the embedded node and Redis (scripts/stack.sh start es redis).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import urllib3

PREFIX = "hrbench-serve"
ENV = {"HYBRIDREC_INDEX_PREFIX": PREFIX, "HYBRIDREC_REDIS_URL": "redis://127.0.0.1:6379/10",
       "HYBRIDREC_BROKER_URL": "redis://127.0.0.1:6379/9", "HYBRIDREC_RECO_CACHE_TTL": "0",
       "HYBRIDREC_RATE_LIMIT": "1000000/second",  # the limiter still runs; it must not throttle the load
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
os.environ.update(ENV)
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PORT = 8099
WORDS = ("space rocket garden kitchen pasta football river mountain jazz guitar winter summer robot ocean "
         "forest castle dragon detective comedy thriller romance history science travel").split()
CATEGORIES = ["books", "films", "music", "games", "sports"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    return {"requests": len(latencies), "req_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2),
            "p99_ms": round(percentile(latencies, 99), 2)}


def run_threads(loop, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    """Run loop(seed) on `concurrency` threads until each returns; returns the wall time in seconds."""
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def load_catalog(es, settings, n: int) -> None:  # type: ignore[no-untyped-def]
    from elasticsearch import helpers

    from indexer import lifecycle

    names = list(es.indices.get(index=f"{PREFIX}-*", ignore_unavailable=True, allow_no_indices=True).body)
    if names:
        es.indices.delete(index=names)
    index = lifecycle.ensure_indices(es, settings)["items"]
    rng = np.random.default_rng(1)

    def docs():  # type: ignore[no-untyped-def]
        for start in range(0, n, 1000):
            vectors = rng.normal(size=(min(1000, n - start), 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            for offset, vector in enumerate(vectors):
                i = start + offset
                words = [WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(4)]
                yield {"_index": index, "_id": f"s{i}", "_source": {
                    "id": f"s{i}", "title": " ".join(words), "description": f"item {i} about {words[0]}",
                    "category": CATEGORIES[i % len(CATEGORIES)], "tags": words[:2], "price": float(i % 200),
                    "in_stock": i % 10 != 0, "popularity": float(i % 1000), "embedding": vector.tolist(),
                    "embedding_model": "synthetic", "text_hash": "synthetic"}}

    helpers.bulk(es.options(request_timeout=300), docs(), chunk_size=500)
    es.indices.refresh(index=index)
    es.options(request_timeout=900).indices.forcemerge(index=index, max_num_segments=1)


def make_users(es, settings, users: int, n_items: int) -> None:  # type: ignore[no-untyped-def]
    from indexer import lifecycle, search
    from indexer.clients import make_redis
    from indexer.profile_store import AppliedEvent, ProfileStore

    redis = make_redis(settings)
    redis.flushdb()
    store = ProfileStore(redis, settings)
    rng = random.Random(2)
    now = time.time()
    for u in range(users):
        ids = [f"s{rng.randrange(n_items)}" for _ in range(5)]
        vectors = search.item_vectors(es, lifecycle.alias_name(settings, "items"), ids)
        for k, item_id in enumerate(ids):
            store.apply(f"u{u}", vectors[item_id], AppliedEvent(item_id, 2.0, now - 60 * k, None))


def run_load(url_for, seconds: float, concurrency: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    http = urllib3.PoolManager(maxsize=concurrency * 2, timeout=urllib3.Timeout(total=10))
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            response = http.request("GET", url_for(rng))
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                if response.status == 200:
                    latencies.append(elapsed)
                else:
                    errors += 1

    result = summary(latencies, run_threads(loop, concurrency))
    result["errors"] = errors
    return result


def raw_es(es, settings, users: int, with_q: bool, seconds: float, concurrency: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The same msearch the API sends (same profile vector, seen filter, query text and vector), issued
    directly from this process at the same concurrency; inputs are prepared before the clock starts."""
    from indexer.read_params import ReadParams
    from indexer import lifecycle, search
    from indexer.clients import make_redis
    from indexer.encoder import get_encoder
    from indexer.profile import query_vector
    from indexer.profile_store import ProfileStore

    store = ProfileStore(make_redis(settings), settings)
    encoder = get_encoder(settings)
    index = lifecycle.alias_name(settings, "items")
    rng = random.Random(3)
    prepared = []
    for _ in range(300):
        profile, seen = store.load_with_seen(f"u{rng.randrange(users)}")
        q = " ".join(rng.sample(WORDS, 2)) if with_q else None
        prepared.append((ReadParams(k=10).filters(tuple(seen)), query_vector(profile), q,
                         encoder.encode([q])[0] if q else None))
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop(seed: int) -> None:
        local = random.Random(seed)
        while time.perf_counter() < deadline:
            filters, user_vec, q, q_vec = local.choice(prepared)
            began = time.perf_counter()
            search.retrieve(es, index, filters=filters, size=10, text=q, user_vector=user_vec, query_vector=q_vec)
            with lock:
                latencies.append((time.perf_counter() - began) * 1000)

    return summary(latencies, run_threads(loop, concurrency))


def freshness(trials: int = 200) -> dict[str, float]:
    """Event POST accepted -> the next recommendation response carries the new profile version."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(total=10))
    base = f"http://127.0.0.1:{PORT}"
    lags = []
    for t in range(trials):
        body = json.dumps({"user_id": "fresh-user", "item_id": f"s{t}", "type": "click"})
        response = http.request("POST", f"{base}/v1/events", body=body, headers={"Content-Type": "application/json"})
        version = json.loads(response.data)["profile_versions"]["fresh-user"]
        accepted = time.perf_counter()
        while True:
            reco = json.loads(http.request("GET", f"{base}/v1/users/fresh-user/recommendations?k=10").data)
            if reco["profile_version"] >= version:
                break
        lags.append((time.perf_counter() - accepted) * 1000)
    return {"trials": trials, "p50_ms": round(percentile(lags, 50), 2), "p99_ms": round(percentile(lags, 99), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--api-workers", type=int, default=2)
    args = parser.parse_args()

    from indexer.clients import make_es
    from indexer.settings import get_settings

    settings = get_settings()
    es = make_es(settings, timeout=30)
    report = {"benchmark": "serving", "note": "synthetic catalog, random vectors; cache disabled", "runs": []}
    for n_items in args.items:
        load_catalog(es, settings, n_items)
        make_users(es, settings, args.users, n_items)
        log = open(REPO / ".hybridrec" / "bench-api.log", "ab")
        api = subprocess.Popen([sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{PORT}", "--workers",
                                str(args.api_workers), "--threads", "4", "api:create_app()"],
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            http = urllib3.PoolManager()
            for _ in range(120):
                try:
                    if http.request("GET", f"http://127.0.0.1:{PORT}/ready", timeout=2).status == 200:
                        break
                except urllib3.exceptions.HTTPError:
                    pass
                time.sleep(0.5)
            for with_q in (False, True):
                def url_for(rng: random.Random) -> str:
                    q = "&q=" + "+".join(rng.sample(WORDS, 2)) if with_q else ""
                    return f"http://127.0.0.1:{PORT}/v1/users/u{rng.randrange(args.users)}/recommendations?k=10{q}"

                run_load(url_for, 2.0, 2)  # warm-up: model load, query-vector cache, ES caches
                for c in args.concurrency:
                    raw = raw_es(es, settings, args.users, with_q, args.seconds, c)
                    api_stats = run_load(url_for, args.seconds, c)
                    print(f"items={n_items} q={with_q} c={c} api={api_stats} raw={raw}", file=sys.stderr)
                    report["runs"].append({
                        "items": n_items, "with_q": with_q, "concurrency": c, "api": api_stats, "raw_es": raw,
                        "ratio_api_p50_over_raw_es_p50": round(api_stats["p50_ms"] / raw["p50_ms"], 3),
                        "ratio_api_p99_over_raw_es_p99": round(api_stats["p99_ms"] / raw["p99_ms"], 3)})
            report.setdefault("freshness", {})[str(n_items)] = freshness()
        finally:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(timeout=60)
    names = list(es.indices.get(index=f"{PREFIX}-*").body)
    if names:
        es.indices.delete(index=names)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
