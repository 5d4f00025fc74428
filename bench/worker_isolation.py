"""Worker isolation benchmark (issue 13 item 6): event-to-indexed latency (an event accepted by the API ->
its document in the events index) with and without a running reindex of the demo catalog, under the
workers scripts/stack.sh runs (split: events / embed+index / train) and, for contrast, one combined worker
for every queue. Prints JSON.

The demo catalog (MovieLens-100K movies, 1,682 items) is loaded once in this process. Before each reindex
its documents are marked as embedded by another model, so the reindex embeds every item again, as it does
after a model change (a reindex with nothing changed only copies). For each layout: the workers started
by scripts/stack.sh (its own state folder), the API (bench/load.py start_api), then events POSTed one at a
time at --rate per second: --events of them with the workers idle, then as many as are accepted while the
reindex runs (at most --max-seconds). Lag = the 202 returned -> a real-time mget of the event's id finds
the document (searchable after the next refresh, at most 1 s more). The profile itself is updated by the
API before the 202 (`profile_pending` counts the events where it was not).
Usage: .venv/bin/python bench/worker_isolation.py [--layout split combined] [--events 100] [--rate 10]
Needs the embedded node and Redis (scripts/stack.sh start es redis). Prefix hrbench-iso; Redis DBs of its own
(--redis-url, --broker-url: both are emptied, so never DBs a test or another stack uses); workers' metrics on
--metrics-port (+1, +2), the API on --port.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import urllib3

PREFIX = "hrbench-iso"
ENV = {"HYBRIDREC_INDEX_PREFIX": PREFIX, "HYBRIDREC_RATE_LIMIT": "1000000/second",
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
os.environ.update(ENV)
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.load import bench_clients, ms, start_api, write_report  # noqa: E402
from bench.synthetic import drop_indices  # noqa: E402


class Tracker:
    """Events accepted and not yet indexed, polled by a real-time mget every 20 ms on a thread of its own."""

    def __init__(self, es: Any, index: str, timeout_s: float = 180.0) -> None:
        self.es, self.index, self.timeout_s = es, index, timeout_s
        self.pending: dict[str, float] = {}
        self.lags: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def accepted(self, event_id: str) -> None:
        with self.lock:
            self.pending[event_id] = time.perf_counter()

    def _poll(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                ids = list(self.pending)
            if ids:
                found = self.es.mget(index=self.index, ids=ids, source=False, realtime=True)["docs"]
                now = time.perf_counter()
                with self.lock:
                    for doc in found:
                        if doc.get("found"):
                            self.lags[doc["_id"]] = (now - self.pending.pop(doc["_id"])) * 1000
            time.sleep(0.02)

    def wait(self, ids: list[str]) -> dict[str, Any]:
        """Wait until every id is indexed (or timeout_s pass); their lag percentiles."""
        deadline = time.perf_counter() + self.timeout_s
        while time.perf_counter() < deadline and any(i not in self.lags for i in ids):
            time.sleep(0.05)
        lags = [self.lags[i] for i in ids if i in self.lags]
        return {"events": len(ids), "indexed": len(lags), **ms(lags, "event_to_indexed", 1),
                "max_ms": round(max(lags), 1) if lags else None}


def post_events(http: urllib3.PoolManager, base: str, tracker: Tracker, rate: float, count: int | None,
                until: Any = None, max_seconds: float = 120.0) -> tuple[list[str], int]:
    """POST single events at `rate` per second: `count` of them, or while until() is true (bounded by
    max_seconds). Returns the accepted ids and how many came back with profile_pending."""
    ids, pending, began, n = [], 0, time.perf_counter(), 0
    while (count is None or n < count) and time.perf_counter() - began < max_seconds:
        if until is not None and not until():
            break
        event_id = uuid.uuid4().hex
        body = {"user_id": f"iso-u{n % 50}", "item_id": str(1 + n % 1682), "type": "click", "event_id": event_id}
        response = http.request("POST", f"{base}/v1/events", body=json.dumps(body),
                                headers={"Content-Type": "application/json"})
        if response.status != 202:
            raise SystemExit(f"event refused: {response.status} {response.data[:200]!r}")
        tracker.accepted(event_id)
        ids.append(event_id)
        pending += bool(json.loads(response.data)["profile_pending"])
        n += 1
        time.sleep(max(0.0, began + n / rate - time.perf_counter()))
    return ids, pending


def mark_stale(es: Any, settings: Any) -> int:
    """Every item marked as embedded by another model: the next reindex embeds them all again."""
    from elasticsearch.helpers import bulk, scan

    from indexer import lifecycle

    index = lifecycle.current_index(es, settings)
    actions = ({"_op_type": "update", "_index": index, "_id": hit["_id"], "doc": {"embedding_model": "bench-old"}}
               for hit in scan(es, index=index, query={"query": {"match_all": {}}}, source=False))
    done, _ = bulk(es, actions, refresh=True)
    return int(done)


def stack(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(["bash", str(REPO / "scripts" / "stack.sh"), *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=240)
    if done.returncode != 0:
        raise SystemExit(f"stack.sh {' '.join(args)} failed: {done.stderr[-2000:]}")


def run_layout(es: Any, settings: Any, layout: str, args: argparse.Namespace) -> dict[str, Any]:
    from indexer import lifecycle

    state = REPO / ".hybridrec" / f"bench-iso-{layout}"
    env = {"HYBRIDREC_STATE_DIR": str(state), "HYBRIDREC_WORKER_LAYOUT": layout,
           "HYBRIDREC_VENV": str(Path(sys.executable).parent.parent),
           "HYBRIDREC_WORKER_METRICS_PORT": str(args.metrics_port)}
    base = f"http://127.0.0.1:{args.port}"
    http = urllib3.PoolManager(timeout=urllib3.Timeout(total=30))
    tracker = Tracker(es, lifecycle.alias_name(settings, "events"))
    stack(env, "start", "worker")
    api = start_api(REPO, args.port, 1, REPO / ".hybridrec" / "bench-iso-api.log", server=args.server)
    try:
        warm, _ = post_events(http, base, tracker, args.rate, 10)  # workers' first tasks load their code
        tracker.wait(warm)
        ids, pending = post_events(http, base, tracker, args.rate, args.events)
        idle = {**tracker.wait(ids), "profile_pending": pending}
        stale = mark_stale(es, settings)
        task = json.loads(http.request("POST", f"{base}/v1/admin/reindex").data)["task_id"]
        began = time.perf_counter()
        state_of: dict[str, Any] = {"state": "PENDING"}

        def running() -> bool:
            state_of.update(json.loads(http.request("GET", f"{base}/v1/tasks/{task}").data))
            return state_of["state"] not in ("SUCCESS", "FAILURE")

        ids, pending = post_events(http, base, tracker, args.rate, None, until=running, max_seconds=args.max_seconds)
        reindex_s = time.perf_counter() - began
        during = {**tracker.wait(ids), "profile_pending": pending}
        while running() and time.perf_counter() - began < args.max_seconds + 300:
            time.sleep(0.5)
        result = state_of.get("result") or {}
        return {"layout": layout, "idle": idle, "during_reindex": during,
                "reindex": {"state": state_of["state"], "items_marked_stale": stale, "embedded": result.get("embedded"),
                            "seconds_while_events_posted": round(reindex_s, 1),
                            "seconds_total": round(time.perf_counter() - began, 1)},
                "p99_ratio_during_over_idle": round(during["event_to_indexed_p99_ms"]
                                                    / idle["event_to_indexed_p99_ms"], 2)}
    finally:
        tracker.stop.set()
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=60)
        stack(env, "stop", "worker")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layout", nargs="+", choices=["split", "combined"], default=["split", "combined"])
    parser.add_argument("--events", type=int, default=100, help="events with the workers idle, per layout")
    parser.add_argument("--rate", type=float, default=10.0, help="events POSTed per second")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="the longest an event phase runs")
    parser.add_argument("--server", default="gunicorn-gthread")
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--metrics-port", type=int, default=9816)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.update(HYBRIDREC_REDIS_URL=args.redis_url, HYBRIDREC_BROKER_URL=args.broker_url)

    from redis import Redis

    from indexer.datasets import movielens_items, recbole_wheel
    from workers.cli import ingest

    settings, es = bench_clients(timeout=30)
    report: dict[str, Any] = {"benchmark": "worker_isolation", "rate_per_s": args.rate, "runs": []}
    try:
        drop_indices(es, PREFIX)
        for url in (settings.redis_url, settings.broker_url):
            Redis.from_url(url).flushdb()
        began = time.perf_counter()
        items = movielens_items(recbole_wheel(REPO / ".hybridrec" / "datasets"))
        totals = ingest(iter(items), sync=True, total=len(items))
        report["catalog"] = {"items": totals["indexed"], "load_s": round(time.perf_counter() - began, 1)}
        for layout in args.layout:
            run = run_layout(es, settings, layout, args)
            print(json.dumps(run), file=sys.stderr)
            report["runs"].append(run)
    finally:
        drop_indices(es, PREFIX)
        for url in (settings.redis_url, settings.broker_url):  # this benchmark's own DBs
            Redis.from_url(url).flushdb()
    write_report(report, args.out)


if __name__ == "__main__":
    main()
