"""Serving benchmark: API latency (p50/p95/p99) and req/s from this (second) process over loopback at a
few concurrencies, beside the raw Elasticsearch msearch for the same request at the same concurrency in
the same run; plus freshness (event accepted -> next response reflects it). Prints JSON.

The catalog is synthetic at scale: random titles from a small vocabulary and random normalised
384-d vectors (the encoder is not the subject here). Users get profiles through the real event path.
The recommendation cache is disabled (HYBRIDREC_RECO_CACHE_TTL=0) so every request does the work.

Without --cf (content path only, no model): the default request and one with query text.
With --cf (issue 11, collaborative retrievers): synthetic events with clustered tastes (bench/synthetic.py)
go into the events index through indexer.events.record_events; a model is trained and promoted through
indexer.training.train / indexer.promotion.promote (retriever weights pinned above 0, so the default
request runs every retriever: content kNN, item-item `term` queries (long-term and recent), latent kNN
with request-time fold-in; the rest of the grid as trained); the benchmark users' own events are applied
to their profiles as the API does (ProfileStore.apply). Request kinds, each through the API and as the
raw msearch the engine builds for it (Recommender.recommend run in process with indexer.search.msearch
recorded, then replayed):
`default` (no parameters) and `content` (w_item=w_recent=w_cf=0); raw only: `item_item` and `cf_knn`
(the default's searches of that retriever alone). In process: fold-in (ServingModel.user_factor) over
the users' histories in microseconds (default BLAS threads and one), and the engine's own time per
request outside Elasticsearch; --blas-ab repeats the API requests with OPENBLAS_NUM_THREADS=1.
With --server A B ... the API is measured under each WSGI server in turn (gunicorn-sync, gunicorn-gthread,
granian; bench/load.py), every point with its own raw baseline beside it, in the same run; with --cf
--rounds R, all of them up at once and measured in R interleaved rounds (fair on a machine whose load moves).
With --query-encoders (issue 13): the `q` request again with the API restarted on each query encoder
(HYBRIDREC_QUERY_ENCODER); --q-fresh makes every query text new, so each request runs the encoder.
Usage: .venv/bin/python bench/serving.py [--items 10000 100000] [--seconds 8] [--concurrency 1 4 8] [--server ...]
       [--query-encoders torch onnx-int8 [--q-fresh]]
       [--cf [--cf-events 200000] [--cf-holdout-users 500] [--profile DIR] [--blas-ab]] [--out FILE]
       [--es-url URL] [--forcemerge yes|no] [--load-only | --reuse-catalog] [--keep-catalog]
       [--recall-queries 200] [--num-candidates 100 200 400] [--oversample 0 5]
At 1M items: load once with --load-only (no Redis, no load test; the catalog stays), then measure with
--reuse-catalog (with --cf, a catalog kept by --keep-catalog also keeps its events and serving model, and
--reuse-catalog reuses them: the 100k promotion alone takes minutes). Each size also reports its load time,
`_stats` size and segments, node heap after the load and after the load test, and kNN recall@10 against exact
search (bench.synthetic.exact_top).
Round trips (issue 13): the Redis round trips of one GET .../recommendations, counted in this process on
the app gunicorn serves (cache off as in the load runs, a miss, a hit, a cold start). Prefetch: with the
cache on and a Celery worker on the events queue, an event (a click) then, after a gap, the user's default
list: its latency and whether it was a hit, with HYBRIDREC_PREFETCH off and on.
       [--prefetch-trials 100] [--prefetch-gaps-ms 0 50 250]
Needs the embedded node and Redis (scripts/stack.sh start es redis). Prefix hrbench-serve, Redis DBs 9, 10.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

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
CLUSTERS = 50
# The cache in the round-trip counts and the prefetch runs (the load runs switch it off).
CACHE_TTL_S = 300
TARGET = {"items": 100_000, "concurrency": 1, "p99_ms": 25.0}
TARGET_1M = {"items": 1_000_000, "concurrency": 1, "p99_ms": 50.0, "recall_at_10": 0.95}
Searches = list[tuple[str, dict[str, Any]]]
# The default request (no parameters) and the same request with the collaborative retrievers switched off.
KINDS: dict[str, dict[str, Any]] = {"default": {}, "content": {"w_item": 0, "w_recent": 0, "w_cf": 0}}

from bench.load import SERVERS, bench_clients, ms, run_load, start_api, timed_calls, write_report  # noqa: E402
from bench.synthetic import (  # noqa: E402
    WORDS,
    drop_indices,
    exact_top,
    generate,
    held_out_queries,
    item_id,
    load_catalog,
    write_events,
)
from indexer.telemetry import percentile  # noqa: E402


def url_for(users: list[str], query: str, port: int = PORT) -> Callable[[random.Random], str]:
    return lambda rng: f"http://127.0.0.1:{port}/v1/users/{rng.choice(users)}/recommendations{query}"


def make_users(es: Any, settings: Any, users: int, n_items: int) -> None:
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
        for k, iid in enumerate(ids):
            store.apply(f"u{u}", vectors[iid], AppliedEvent(iid, 2.0, now - 60 * k, None))


def raw_es(es: Any, settings: Any, users: int, with_q: bool, seconds: float, concurrency: int) -> dict[str, float]:
    """The same msearch the API sends (same profile vector, seen filter, query text and vector), issued
    directly from this process at the same concurrency; inputs are prepared before the clock starts."""
    from indexer import lifecycle, search
    from indexer.clients import make_redis
    from indexer.encoder import get_encoder
    from indexer.profile import query_vector
    from indexer.profile_store import ProfileStore
    from indexer.read_params import ReadParams

    store = ProfileStore(make_redis(settings), settings)
    encoder = get_encoder(settings)
    index = lifecycle.alias_name(settings, "items")
    candidates, oversample = engine_knn(es, settings, index)
    rng = random.Random(3)
    prepared = []
    for _ in range(300):
        profile, seen = store.load_with_seen(f"u{rng.randrange(users)}")
        q = " ".join(rng.sample(WORDS, 2)) if with_q else None
        assert profile is not None
        prepared.append((ReadParams(k=10).filters(tuple(seen)), query_vector(profile), q,
                         encoder.encode([q])[0] if q else None))
    def call(rng: random.Random) -> bool:
        filters, user_vec, q, q_vec = rng.choice(prepared)
        search.retrieve(es, index, filters=filters, size=10, text=q, user_vector=user_vec, query_vector=q_vec,
                        num_candidates=candidates, oversample=oversample)
        return True

    return timed_calls(call, seconds, concurrency)


def raw_msearch(es: Any, index: str, prepared: list[Searches], seconds: float,
                concurrency: int) -> dict[str, float]:
    """Replay msearch bodies the engine built (engine_requests) through indexer.search.msearch, the call the
    engine makes, at the same concurrency; one body per request, drawn at random."""
    from indexer import search

    def call(rng: random.Random) -> bool:
        search.msearch(es, index, rng.choice(prepared))
        return True

    return timed_calls(call, seconds, concurrency)


def freshness(trials: int = 200) -> dict[str, float]:
    """Event POST accepted -> the next recommendation response carries the new profile version."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(total=10))
    base = f"http://127.0.0.1:{PORT}"
    lags = []
    for t in range(trials):
        body = json.dumps({"user_id": "fresh-user", "item_id": f"s{t}", "type": "click"})
        response = http.request("POST", f"{base}/v1/events", body=body,
                                headers={"Content-Type": "application/json"})
        version = json.loads(response.data)["profile_versions"]["fresh-user"]
        accepted = time.perf_counter()
        while True:
            reco = json.loads(http.request("GET", f"{base}/v1/users/fresh-user/recommendations?k=10").data)
            if reco["profile_version"] >= version:
                break
        lags.append((time.perf_counter() - accepted) * 1000)
    return {"trials": trials, "p50_ms": round(percentile(lags, 50), 2), "p99_ms": round(percentile(lags, 99), 2)}


def node_state(es: Any, index: str) -> dict[str, Any]:
    """The items index on disk (`_stats` store, segments) and the node's JVM heap (`_nodes/stats`)."""
    stats = es.indices.stats(index=index, metric=["store", "segments", "docs"])["indices"]
    primaries = next(iter(stats.values()))["primaries"]
    nodes = es.nodes.stats(metric="jvm")["nodes"].values()
    return {"docs": primaries["docs"]["count"], "segments": primaries["segments"]["count"],
            "store_mib": round(primaries["store"]["size_in_bytes"] / 2**20, 1),
            "heap_used_mib": round(sum(n["jvm"]["mem"]["heap_used_in_bytes"] for n in nodes) / 2**20, 1),
            "heap_max_mib": round(sum(n["jvm"]["mem"]["heap_max_in_bytes"] for n in nodes) / 2**20, 1)}


def engine_knn(es: Any, settings: Any, index: str) -> tuple[int, float | None]:
    """The content kNN's (num_candidates, oversample) the engine uses for this catalog (search.knn_settings)."""
    from indexer import search

    return search.knn_settings(settings, search.CatalogSize(es, index, 10.0).get)


def knn_recall(es: Any, settings: Any, index: str, n_items: int, n_queries: int, num_candidates: list[int],
               oversample: list[float | None]) -> dict[str, Any]:
    """recall@10 of the engine's kNN clause (indexer.queries.knn_clause, no filter) against exact search on
    held-out queries of the catalog's mixture: first at the settings the engine uses for this catalog
    (indexer.search.knn_settings: the shipped defaults unless the environment sets them), then at each
    num_candidates and bbq rescore oversample asked for (None: the index's default), with the client latency
    of each search (one at a time)."""
    from indexer.filters import Filters
    from indexer.queries import knn_clause

    queries = held_out_queries(n_queries, CLUSTERS)
    began = time.perf_counter()
    exact = [{item_id(int(i)) for i in row} for row in exact_top(n_items, CLUSTERS, queries)]
    out: dict[str, Any] = {"queries": n_queries, "k": 10, "exact_s": round(time.perf_counter() - began, 1),
                           "points": []}
    engine = engine_knn(es, settings, index)
    asked = [(candidates, factor) for candidates in num_candidates or [engine[0]] for factor in oversample]
    for index_point, (candidates, factor) in enumerate([engine, *(pair for pair in asked if pair != engine)]):
        recalls, latencies, took = [], [], []
        for q, vector in enumerate(queries):
            knn = knn_clause(vector, Filters(), 10, candidates)
            if factor is not None:
                knn["rescore_vector"] = {"oversample": factor}
            sent = time.perf_counter()
            response = es.search(index=index, knn=knn, size=10, source=False)
            latencies.append((time.perf_counter() - sent) * 1000)
            took.append(response["took"])
            recalls.append(len({h["_id"] for h in response["hits"]["hits"]} & exact[q]) / 10)
        out["points"].append({"num_candidates": candidates, "oversample": factor, "engine": index_point == 0,
                              "recall_at_10": round(float(np.mean(recalls)), 4),
                              "recall_min": min(recalls), **ms(latencies, "client"), **ms(took, "took")})
        print(f"items={n_items} recall {out['points'][-1]}", file=sys.stderr)
    return out


def round_trips(es: Any, settings: Any, user: str) -> dict[str, Any]:
    """Redis round trips of the engine's part of one request (Recommender.recommend, in this process):
    every redis-py send is one (a pipeline is one send). Cache off as in the load runs, then on: a miss, a
    hit, a cold start. The API adds Flask-Limiter's one (tests/integration/test_round_trips.py counts the
    whole request); the reco-log line is pushed by a writer thread, off the request."""
    import re
    from unittest import mock

    from redis.connection import AbstractConnection

    from indexer.clients import make_redis
    from indexer.encoder import get_encoder
    from indexer.read_params import ReadParams
    from indexer.recommender import Recommender

    original = AbstractConnection.send_packed_command
    sends: list[list[str]] = []

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        packet = b"".join(bytes(part) for part in (command if isinstance(command, list) else [command]))
        sends.append([name.decode() for name in re.findall(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n", packet)])
        original(self, command, check_health)

    out: dict[str, Any] = {}
    for ttl, cases in ((0, (("cache_off", user),)),
                       (CACHE_TTL_S, (("miss", user), ("hit", user), ("cold_start", "nobody")))):
        engine = Recommender(settings.model_copy(update={"reco_cache_ttl": ttl}), es, make_redis(settings),
                             lambda: get_encoder(settings))
        engine.recommend("warm-up", ReadParams(k=3))  # the connection opened, the model pointer read
        with mock.patch.object(AbstractConnection, "send_packed_command", counting):
            for label, who in cases:
                sends.clear()
                body = engine.recommend(who, ReadParams())
                out[label] = {"round_trips": len(sends), "commands": sends[:], "cached": body["cached"]}
    return out


def start_worker(log: Path) -> Any:
    """A Celery worker on the events queue (prefetches and the events' durable writes), once it answers."""
    import subprocess

    from workers.celery_app import app

    with log.open("ab") as out:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-c", "1",
                                   "-Q", "events", "--hostname", f"{PREFIX}-prefetch@%h", "--without-gossip",
                                   "--without-mingle", "--loglevel=WARNING"], cwd=REPO, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "HYBRIDREC_RECO_CACHE_TTL": str(CACHE_TTL_S)})
    deadline = time.monotonic() + 120
    while not any(PREFIX in n for r in (app.control.ping(timeout=1.0) or []) for n in r):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"celery worker did not start, see {log}")
    return worker


def after_event(users: list[str], n_items: int, trials: int, gap_ms: float) -> dict[str, Any]:
    """`trials` times: a click for a random user, `gap_ms`, then that user's default list (a client that
    acts, then reloads). The list's latency, the cache hit rate, and the event POST's own latency."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(total=10))
    base = f"http://127.0.0.1:{PORT}"
    rng = random.Random(int(gap_ms) + 7)
    posts, nexts, hits = [], [], 0
    for _ in range(trials):
        user = rng.choice(users)
        body = json.dumps({"user_id": user, "item_id": f"s{rng.randrange(n_items)}", "type": "click"})
        began = time.perf_counter()
        response = http.request("POST", f"{base}/v1/events", body=body, headers={"Content-Type": "application/json"})
        posts.append((time.perf_counter() - began) * 1000)
        version = json.loads(response.data)["profile_versions"][user]
        time.sleep(gap_ms / 1000)
        began = time.perf_counter()
        reco = json.loads(http.request("GET", f"{base}/v1/users/{user}/recommendations").data)
        nexts.append((time.perf_counter() - began) * 1000)
        if reco["profile_version"] < version:
            raise SystemExit(f"served a list older than the profile that asked: {reco['profile_version']} < {version}")
        hits += bool(reco["cached"])
    return {"gap_ms": gap_ms, "trials": trials, "hit_rate": round(hits / trials, 3), **ms(nexts, "next_request"),
            **ms(posts, "event_post")}


def prefetch_lag(settings: Any, users: list[str], n_items: int, trials: int) -> dict[str, Any]:
    """Event accepted -> its prefetched list in the cache (the entry polled every millisecond, 2 s at most)."""
    from indexer.clients import make_redis
    from indexer.read_params import ReadParams
    from indexer.response_cache import FIELDS, ResponseCache

    redis = make_redis(settings)
    cache = ResponseCache(redis, settings)
    http = urllib3.PoolManager(timeout=urllib3.Timeout(total=10))
    rng = random.Random(11)
    lags, missing = [], 0
    for _ in range(trials):
        user = rng.choice(users)
        body = json.dumps({"user_id": user, "item_id": f"s{rng.randrange(n_items)}", "type": "click"})
        response = http.request("POST", f"http://127.0.0.1:{PORT}/v1/events", body=body,
                                headers={"Content-Type": "application/json"})
        accepted = time.perf_counter()
        version = json.loads(response.data)["profile_versions"][user]
        key = cache.key(user, ReadParams(), None)
        while time.perf_counter() - accepted < 2.0:
            entry = cache.entry(redis.hmget(key, FIELDS))
            if entry is not None and entry.profile_version >= version:
                lags.append((time.perf_counter() - accepted) * 1000)
                break
            time.sleep(0.001)
        else:
            missing += 1
    return {"trials": trials, "not_within_2s": missing, **ms(lags, "event_to_prefetched")}


def prefetch_runs(settings: Any, users: list[str], n_items: int, args: argparse.Namespace) -> dict[str, Any]:
    """The request after an event with HYBRIDREC_PREFETCH off and on (the cache on, 300 s, in both), each
    mode on a fresh API; one worker on the events queue serves both."""
    from redis import Redis

    Redis.from_url(os.environ["HYBRIDREC_BROKER_URL"]).flushdb()  # durable writes queued by earlier runs
    worker = start_worker(REPO / ".hybridrec" / "bench-worker.log")
    out: dict[str, Any] = {}
    try:
        for mode in ("off", "on"):
            api = start_api(REPO, PORT, args.api_workers, REPO / ".hybridrec" / "bench-api.log",
                            env={"HYBRIDREC_RECO_CACHE_TTL": str(CACHE_TTL_S),
                                 "HYBRIDREC_PREFETCH": str(mode == "on").lower()})
            try:
                run_load(url_for(users, ""), 2.0, 1)  # warm-up
                out[mode] = [after_event(users, n_items, args.prefetch_trials, gap) for gap in args.prefetch_gaps_ms]
                if mode == "on":
                    out["lag"] = prefetch_lag(settings, users, n_items, args.prefetch_trials)
            finally:
                os.killpg(api.pid, signal.SIGTERM)
                api.wait(timeout=60)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    out["on_over_off_next_request"] = [
        {"gap_ms": on["gap_ms"], "p50": round(on["next_request_p50_ms"] / off["next_request_p50_ms"], 3),
         "p99": round(on["next_request_p99_ms"] / off["next_request_p99_ms"], 3)}
        for off, on in zip(out["off"], out["on"], strict=True)]
    return out


# -- collaborative retrievers (--cf) ------------------------------------------------------------------------
def cf_setup(es: Any, settings: Any, n_items: int, n_events: int, n_users: int,
             holdout_users: int, reuse: bool = False) -> tuple[list[str], dict[str, Any]]:
    """Events -> events index, train + promote through the real code, then the benchmark users' own events
    applied to their profiles as the API applies them. Returns the users and what was done."""
    from bench.synthetic import EVENT_TYPES
    from indexer import lifecycle, promotion, search
    from indexer import model_registry as registry
    from indexer.clients import make_redis
    from indexer.profile import EVENT_WEIGHTS
    from indexer.profile_store import AppliedEvent, ProfileStore
    from indexer.training import TrainOptions, train

    events = generate(n_events, n_items, clusters=CLUSTERS)
    info: dict[str, Any] = {"synthetic": events.summary()}
    index = lifecycle.alias_name(settings, "items")
    serving = registry.read_pointer(es, settings).version if reuse else None
    if serving is not None and es.count(index=lifecycle.alias_name(settings, "events"))["count"] == n_events:
        # --reuse-catalog after --keep-catalog: the same events (generate is seeded) and the model trained on
        # them are still there; only the benchmark users' profiles are rebuilt below.
        info["train"] = {"reused_model": serving}
    else:
        info["write_events"] = write_events(es, settings, events)
        # The retriever weights pinned above 0, so the default request runs every retriever (a weight changes
        # which retrievers run, not what one costs); the rest of the grid as trained; fewer held-out users.
        options = replace(TrainOptions(), recent_weights=(0.25,), cf_weights=(0.5,), user_weights=(0.25,),
                          holdout_users=holdout_users)
        began = time.perf_counter()
        result = train(es, settings, options, promote=lambda v: promotion.promote(es, settings, v))
        info["train"] = {"state": result.state, "reason": result.reason, "seconds_with_promotion":
                         round(time.perf_counter() - began, 1),
                         **{k: result.info.get(k) for k in ("items", "users", "neighbour_weights", "train_s",
                                                            "params", "metrics", "promotion")}}
        if result.state != "serving":
            raise SystemExit(f"model not promoted: {result.state} ({result.reason})")
        began = time.perf_counter()
        es.options(request_timeout=900).indices.forcemerge(index=index, max_num_segments=1)
        info["forcemerge_after_promotion_s"] = round(time.perf_counter() - began, 1)
    redis = make_redis(settings)
    redis.flushdb()
    store = ProfileStore(redis, settings)
    counts = events.per_user()
    rng = np.random.default_rng(3)
    chosen = rng.choice(np.flatnonzero(counts >= 3), size=min(n_users, int((counts >= 3).sum())), replace=False)
    lengths = []
    for user in chosen.tolist():
        rows = events.of_user(user)
        ids = [item_id(int(i)) for i in events.items[rows]]
        vectors = search.item_vectors(es, index, ids)
        for iid, kind, ts in zip(ids, events.types[rows].tolist(), events.ts[rows].tolist(), strict=True):
            event = AppliedEvent(iid, EVENT_WEIGHTS[EVENT_TYPES[kind]], ts, f"u{user}-{int(ts // 86400)}")
            history = store.apply(f"u{user}", vectors.get(iid), event).interactions
        lengths.append(len(history))
    info["bench_users"] = {"users": len(chosen), "history_p50": float(np.median(lengths)),
                           "history_max": max(lengths)}
    return [f"u{u}" for u in chosen.tolist()], info


def engine_requests(es: Any, settings: Any, users: list[str], kinds: dict[str, dict[str, Any]],
                    profile_dir: Path | None, n_items: int) -> tuple[dict[str, list[Searches]], dict[str, Any]]:
    """Recommender.recommend in this process for every user and kind, with indexer.search.msearch wrapped:
    the searches it is handed are the engine's own msearch body (indexer.queries via Recommender._searches).
    A second pass times the engine per request, with and without its msearch, and the fold-in alone."""
    from unittest import mock

    from threadpoolctl import threadpool_limits

    from indexer import search
    from indexer.clients import make_redis
    from indexer.encoder import get_encoder
    from indexer.read_params import ReadParams
    from indexer.recommender import Recommender

    recommender = Recommender(settings, es, make_redis(settings), lambda: get_encoder(settings))
    original = search.msearch
    seen: list[tuple[Searches, float]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seen.append((list(args[2]), time.perf_counter() - began))

    bodies: dict[str, list[Searches]] = {}
    timing: dict[str, Any] = {}
    with mock.patch.object(search, "msearch", recording):
        for kind, raw in kinds.items():
            params = ReadParams.model_validate(raw)
            bodies[kind] = []
            for user in users:
                seen.clear()
                recommender.recommend(user, params)
                if seen:
                    bodies[kind].append(seen[0][0])
            total, outside = [], []
            for user in users:
                seen.clear()
                began = time.perf_counter()
                recommender.recommend(user, params)
                elapsed = time.perf_counter() - began
                total.append(elapsed * 1000)
                outside.append((elapsed - sum(t for _, t in seen)) * 1000)
            timing[kind] = {**ms(total, "engine"), **ms(outside, "outside_es"),
                            "retrievers": sorted({name for name, _ in bodies[kind][0]}) if bodies[kind] else []}
        if profile_dir is not None:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            with profiler:
                for user in users:
                    recommender.recommend(user, ReadParams.model_validate(kinds["default"]))
            profile_dir.mkdir(parents=True, exist_ok=True)
            (profile_dir / f"engine-default-{n_items}.txt").write_text(profiler.output_text(show_all=False))
    model = recommender.models.serving()
    assert model is not None
    histories = [profile.interactions for profile in map(recommender.store.load, users) if profile]
    for label, blas_threads in (("fold_in_us", None), ("fold_in_one_blas_thread_us", 1)):
        fold, weights = [], []
        with threadpool_limits(blas_threads):
            for _ in range(5):
                for history in histories:
                    began = time.perf_counter_ns()
                    model.user_factor(history)
                    fold.append((time.perf_counter_ns() - began) / 1000)
                    began = time.perf_counter_ns()
                    model.history_weights(history), model.history_weights(history, recent=True)
                    weights.append((time.perf_counter_ns() - began) / 1000)
        timing[label] = {"calls": len(fold), **ms(fold, "", 1)}
    timing["history_weights_us"] = ms(weights, "", 1)
    terms = [len(model.history_weights(h)) for h in histories]  # the long-term item-item query's terms
    timing["history_items"] = {"p50": percentile([len(h) for h in histories], 50),
                               "max": max(len(h) for h in histories)}
    timing["item_item_terms"] = {"p50": percentile(terms, 50), "max": max(terms)}
    return bodies, timing


def cf_runs(es: Any, settings: Any, n_items: int, users: list[str], args: argparse.Namespace,
            recorded: tuple[dict[str, list[Searches]], dict[str, Any]]) -> dict[str, Any]:
    """API and raw msearch for each kind at each concurrency, the raw retriever subsets, the in-process costs
    (`recorded`: engine_requests' answer, computed once per catalog for every server)."""
    from indexer import lifecycle

    kinds = KINDS
    bodies, engine = dict(recorded[0]), recorded[1]
    subsets = {"item_item": ("item_item", "item_recent"), "cf_knn": ("cf_knn",)}
    for name, keep in subsets.items():
        bodies[name] = [[s for s in searches if s[0] in keep] for searches in bodies["default"]]
    index = lifecycle.alias_name(settings, "items")
    runs = []
    urls = {kind: url_for(users, ("?" + urlencode(params)) if params else "") for kind, params in kinds.items()}
    for url in urls.values():
        run_load(url, 2.0, 2)  # warm-up: both API workers load the model
    for c in args.concurrency:
        point: dict[str, Any] = {"items": n_items, "concurrency": c}
        for kind in kinds:
            raw = raw_msearch(es, index, bodies[kind], args.seconds, c)
            api = run_load(urls[kind], args.seconds, c)
            point[kind] = {"api": api, "raw_es": raw,
                           "ratio_api_p50_over_raw_p50": round(api["p50_ms"] / raw["p50_ms"], 3),
                           "ratio_api_p99_over_raw_p99": round(api["p99_ms"] / raw["p99_ms"], 3)}
        for name in subsets:
            point[f"raw_{name}_only"] = raw_msearch(es, index, bodies[name], args.seconds, c)
        point["cf_added_ms"] = {f"{side}_{p}": round(point["default"][side][f"{p}_ms"]
                                                     - point["content"][side][f"{p}_ms"], 2)
                                for side in ("api", "raw_es") for p in ("p50", "p99")}
        print(f"items={n_items} c={c} {json.dumps(point)}", file=sys.stderr)
        runs.append(point)
    return {"points": runs, "in_process": engine}


def api_points(users: list[str], kinds: dict[str, dict[str, Any]],
               args: argparse.Namespace) -> list[dict[str, Any]]:
    """The API alone for each kind at each concurrency (after a warm-up of each)."""
    urls = {kind: url_for(users, ("?" + urlencode(params)) if params else "") for kind, params in kinds.items()}
    for url in urls.values():
        run_load(url, 2.0, 2)
    return [{"concurrency": c, **{kind: run_load(url, args.seconds, c) for kind, url in urls.items()}}
            for c in args.concurrency]


def content_runs(es: Any, settings: Any, n_items: int, args: argparse.Namespace,
                 query_encoder: str | None = None) -> list[dict[str, Any]]:
    runs = []
    # With --query-encoders the q request runs once per encoder (below), not here as well.
    for with_q in (True,) if query_encoder else (False,) if args.query_encoders else (False, True):
        def url(rng: random.Random, with_q: bool = with_q) -> str:
            q = "&q=" + "+".join(rng.sample(WORDS, 2)) if with_q else ""
            if with_q and args.q_fresh:  # a number BM25 matches nowhere: every query misses the vector cache
                q += f"+{rng.randrange(10**9)}"
            return f"http://127.0.0.1:{PORT}/v1/users/u{rng.randrange(args.users)}/recommendations?k=10{q}"

        run_load(url, 2.0, 2)  # warm-up: model load, query-vector cache, ES caches
        for c in args.concurrency:
            raw = raw_es(es, settings, args.users, with_q, args.seconds, c)
            api_stats = run_load(url, args.seconds, c)
            print(f"items={n_items} q={with_q} c={c} api={api_stats} raw={raw}", file=sys.stderr)
            runs.append({"items": n_items, "with_q": with_q, "concurrency": c, "api": api_stats, "raw_es": raw,
                         **({"query_encoder": query_encoder, "q_fresh": args.q_fresh} if with_q else {}),
                         "ratio_api_p50_over_raw_es_p50": round(api_stats["p50_ms"] / raw["p50_ms"], 3),
                         "ratio_api_p99_over_raw_es_p99": round(api_stats["p99_ms"] / raw["p99_ms"], 3)})
    return runs


def measure(es: Any, settings: Any, n_items: int, server: str, users: list[str],
            recorded: tuple[dict[str, list[Searches]], dict[str, Any]] | None, args: argparse.Namespace,
            report: dict[str, Any]) -> None:
    """One server's points for this catalog into `report`: the API started under `server`, the raw
    baseline measured beside each point, freshness."""
    log = REPO / ".hybridrec" / "bench-api.log"
    api = start_api(REPO, PORT, args.api_workers, log, server=server)
    try:
        if recorded is not None:
            report["runs"].append({"items": n_items, "server": server,
                                   **cf_runs(es, settings, n_items, users, args, recorded)})
            if args.blas_ab:
                os.killpg(api.pid, signal.SIGTERM)
                api.wait(timeout=60)
                api = start_api(REPO, PORT, args.api_workers, log, server=server,
                                env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
                report["runs"][-1]["api_one_blas_thread"] = api_points(users, KINDS, args)
        else:
            report["runs"].extend({"server": server, **run} for run in content_runs(es, settings, n_items, args))
            for query_encoder in args.query_encoders:
                os.killpg(api.pid, signal.SIGTERM)
                api.wait(timeout=60)
                api = start_api(REPO, PORT, args.api_workers, log, server=server,
                                env={"HYBRIDREC_QUERY_ENCODER": query_encoder})
                report["runs"].extend({"server": server, **run}
                                      for run in content_runs(es, settings, n_items, args, query_encoder))
        report.setdefault("freshness", {})[f"{n_items}/{server}"] = freshness()
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=60)


def interleaved(es: Any, settings: Any, n_items: int, users: list[str],
                recorded: tuple[dict[str, list[Searches]], dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Every server up at once (PORT + 1, + 2, ...); per concurrency, --rounds rounds of: the raw msearch,
    then each server in a shuffled order, the default request, --seconds each. On a machine whose load
    moves, servers measured minutes apart are not comparable; measured in the same round they are. Per
    server: the median over rounds of p50, p99, req/s and of the ratios to the same round's raw."""
    from statistics import median

    from indexer import lifecycle

    index = lifecycle.alias_name(settings, "items")
    bodies = recorded[0]["default"]
    log = REPO / ".hybridrec" / "bench-api.log"
    ports = {server: PORT + 1 + i for i, server in enumerate(args.server)}
    apis = [start_api(REPO, port, args.api_workers, log, server=server) for server, port in ports.items()]
    order = random.Random(7)
    points = []
    try:
        urls = {server: url_for(users, "", port) for server, port in ports.items()}
        for url in urls.values():
            run_load(url, 2.0, 2)
        for c in args.concurrency:
            rounds: list[dict[str, Any]] = []
            for _ in range(args.rounds):
                row: dict[str, Any] = {"raw_es": raw_msearch(es, index, bodies, args.seconds, c)}
                for server in order.sample(list(urls), len(urls)):
                    row[server] = run_load(urls[server], args.seconds, c)
                rounds.append(row)
            point: dict[str, Any] = {"items": n_items, "concurrency": c, "rounds": rounds}
            for server in urls:
                point[server] = {
                    **{f"{key}_median": median(r[server][key] for r in rounds)
                       for key in ("p50_ms", "p99_ms", "req_per_s")},
                    **{f"ratio_{p}_over_raw_median": round(median(r[server][f"{p}_ms"] / r["raw_es"][f"{p}_ms"]
                                                                  for r in rounds), 3) for p in ("p50", "p99")},
                    "errors": sum(r[server]["errors"] for r in rounds)}
            point["raw_es"] = {f"{key}_median": median(r["raw_es"][key] for r in rounds)
                               for key in ("p50_ms", "p99_ms", "req_per_s")}
            print(json.dumps({k: v for k, v in point.items() if k != "rounds"}), file=sys.stderr)
            points.append(point)
    finally:
        for api in apis:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(timeout=60)
    return {"items": n_items, "interleaved": points}


def catalog_ready(es: Any, settings: Any, n_items: int) -> bool:
    """Whether the prefix's items index already holds exactly the n_items synthetic items (--reuse-catalog)."""
    from indexer import lifecycle

    alias = lifecycle.alias_name(settings, "items")
    return bool(es.indices.exists_alias(name=alias)) and es.count(index=alias)["count"] == n_items


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--server", nargs="+", choices=SERVERS, default=["gunicorn-gthread"],
                        help="WSGI servers measured side by side, each with the raw baseline beside it")
    parser.add_argument("--es-url", help="Elasticsearch for the bench and its API (default: HYBRIDREC_ES_URL)")
    parser.add_argument("--bulk-threads", type=int, default=2, help="parallel_bulk threads of the catalog load")
    parser.add_argument("--forcemerge", choices=("yes", "no"),
                        help="force-merge the catalog to one segment after the load (default: yes without --cf)")
    parser.add_argument("--load-only", action="store_true",
                        help="load the catalog, report its load and size, keep it; no Redis, no load test")
    parser.add_argument("--reuse-catalog", action="store_true",
                        help="keep a catalog of exactly --items items already in the prefix instead of loading")
    parser.add_argument("--keep-catalog", action="store_true", help="leave the indices in place at the end")
    parser.add_argument("--recall-queries", type=int, default=200, help="kNN recall@10 queries (0: none)")
    parser.add_argument("--num-candidates", type=int, nargs="+", default=[],
                        help="recall@10 at these candidates too, beside the engine's own setting for the catalog")
    parser.add_argument("--oversample", type=float, nargs="+", default=[],
                        help="bbq rescore_vector oversample factors tried beside the index default (0: off)")
    parser.add_argument("--cf", action="store_true", help="train and promote a model; measure the CF retrievers")
    parser.add_argument("--cf-events", type=int, default=200_000, help="synthetic events written before training")
    parser.add_argument("--cf-holdout-users", type=int, default=500)
    parser.add_argument("--profile", type=Path, help="with --cf: write a pyinstrument profile of the engine here")
    parser.add_argument("--blas-ab", action="store_true",
                        help="with --cf: the API requests again, OPENBLAS_NUM_THREADS=1 in the API's environment")
    parser.add_argument("--rounds", type=int, default=0,
                        help="with --cf: every --server up at once, measured in --rounds interleaved rounds")
    parser.add_argument("--query-encoders", nargs="+", choices=["torch", "onnx", "onnx-int8"], default=[],
                        help="content path: the q request again with the API on each of these query encoders")
    parser.add_argument("--q-fresh", action="store_true",
                        help="a random number in every q, so each request embeds its text (no vector cache hit)")
    parser.add_argument("--prefetch-trials", type=int, default=100, help="events per gap and mode; 0 skips prefetch")
    parser.add_argument("--prefetch-gaps-ms", type=float, nargs="+", default=[0.0, 50.0, 250.0],
                        help="pause between the event and the next request")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.es_url:
        os.environ["HYBRIDREC_ES_URL"] = args.es_url  # the API started below inherits it

    from redis import Redis

    from indexer import lifecycle

    settings, es = bench_clients(timeout=30)
    (REPO / ".hybridrec").mkdir(exist_ok=True)  # the API's and the worker's logs
    forcemerge = (args.forcemerge or ("no" if args.cf else "yes")) == "yes"
    report: dict[str, Any] = {"benchmark": "serving", "cf": args.cf, "runs": [], "setup": {},
                              "note": f"synthetic catalog, vectors of a {CLUSTERS}-cluster mixture; "
                                      "cache disabled (prefetch: on, 300 s)"}
    try:
        for n_items in args.items:
            index = lifecycle.alias_name(settings, "items")
            if args.reuse_catalog and catalog_ready(es, settings, n_items):
                setup: dict[str, Any] = {"catalog": "reused"}
            else:
                setup = {"catalog": load_catalog(es, settings, n_items, clusters=CLUSTERS, forcemerge=forcemerge,
                                                 threads=args.bulk_threads)}
            setup["after_load"] = node_state(es, index)
            report["setup"][str(n_items)] = setup
            print(f"items={n_items} setup {json.dumps(setup)}", file=sys.stderr)
            if args.load_only:
                continue
            users: list[str] = []
            if args.cf:
                users, cf_info = cf_setup(es, settings, n_items, args.cf_events, args.users, args.cf_holdout_users,
                                          reuse=setup["catalog"] == "reused")
                setup.update(cf_info)
            else:
                make_users(es, settings, args.users, n_items)
                users = [f"u{u}" for u in range(args.users)]
            report.setdefault("redis_round_trips", {})[str(n_items)] = round_trips(es, settings, users[0])
            recorded = engine_requests(es, settings, users, KINDS, args.profile, n_items) if args.cf else None
            if recorded is not None and args.rounds:
                report["runs"].append(interleaved(es, settings, n_items, users, recorded, args))
            else:
                for server in args.server:
                    measure(es, settings, n_items, server, users, recorded, args, report)
            setup["after_load_test"] = node_state(es, index)
            if args.recall_queries:
                report.setdefault("recall", {})[str(n_items)] = knn_recall(
                    es, settings, index, n_items, args.recall_queries, args.num_candidates, [None, *args.oversample])
            if args.prefetch_trials:
                report.setdefault("prefetch", {})[str(n_items)] = prefetch_runs(settings, users, n_items, args)
            if args.out:  # each size as it completes: a long run cut short keeps what it measured
                args.out.write_text(json.dumps(report, indent=2))
    finally:
        if not (args.keep_catalog or args.load_only):
            drop_indices(es, PREFIX)
        if not args.load_only:
            for url in (settings.redis_url, settings.broker_url):  # this benchmark's own DBs (10, 9)
                Redis.from_url(url).flushdb()
    if args.cf and not args.rounds:
        for run in report["runs"]:
            for point in run["points"]:
                if point["items"] == TARGET["items"] and point["concurrency"] == TARGET["concurrency"]:
                    p99 = point["default"]["api"]["p99_ms"]
                    report.setdefault("target", {})[run["server"]] = {**TARGET, "api_default_p99_ms": p99,
                                                                      "met": p99 <= TARGET["p99_ms"]}
    elif not args.cf:
        report["target_1m"] = million_target(report)
    write_report(report, args.out)


def million_target(report: dict[str, Any]) -> dict[str, Any] | None:
    """Issue 13's target at 1M items: API p99 <= 50 ms at concurrency 1 (no query text) and recall@10 >= 0.95
    at the kNN settings the engine uses for the catalog (the first recall point: knn_recall)."""
    point = next((r for r in report["runs"] if r["items"] == TARGET_1M["items"] and r["concurrency"] == 1
                  and not r["with_q"]), None)
    recall = report.get("recall", {}).get(str(TARGET_1M["items"]))
    if point is None:
        return None
    shipped = recall["points"][0]["recall_at_10"] if recall else None
    return {**TARGET_1M, "api_p99_ms": point["api"]["p99_ms"], "recall_at_10": shipped,
            "met": point["api"]["p99_ms"] <= TARGET_1M["p99_ms"] and shipped is not None
            and shipped >= TARGET_1M["recall_at_10"]}


if __name__ == "__main__":
    main()
