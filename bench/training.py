"""Training benchmark: one collaborative-model training run through the real indexer.training.train, from
the events index, at a large synthetic scale (1M events, 50k items) and at MovieLens-100K-like scale
(100k events, 943 users, 1,682 items) as a sanity check. Prints JSON.

Per scale: synthetic events (bench/synthetic.py: clustered tastes, long-tail popularity, six event types,
timestamps over 60 days) are bulked into the bench prefix's events index with indexer.events.record_events;
the items index gets the items (random clustered, normalised 384-d embeddings); then train() runs, with
promotion (indexer.promotion.promote) unless --no-promote. Measured: seconds, calls and peak RSS of each
stage (train()'s own steps are wrapped in place, no code copied: read events, item catalog, hold-out split,
choose settings and, inside it, ALS, the item-item model, the offline scorer; final fit; save; promote),
total time, the process's peak RSS (resource.getrusage) and peak RSS during train() (sampled every 50 ms
from /proc/self/statm), and the model's size (neighbour weights, factors, artifact bytes).

Usage: .venv/bin/python bench/training.py [--scale ml100k large] [--events N --items N --users N]
       [--no-promote] [--out FILE]
Needs the embedded node (scripts/stack.sh start es redis). Uses the index prefix hrbench-train, deleted at
the end.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

PREFIX = "hrbench-train"
os.environ.update(HYBRIDREC_INDEX_PREFIX=PREFIX, HYBRIDREC_REDIS_URL="redis://127.0.0.1:6379/11",
                  HYBRIDREC_BROKER_URL="redis://127.0.0.1:6379/11", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                  TOKENIZERS_PARALLELISM="false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.load import bench_clients, write_report  # noqa: E402
from bench.synthetic import drop_indices, generate, load_catalog, write_events  # noqa: E402

SCALES: dict[str, dict[str, int | None]] = {
    "ml100k": {"events": 100_000, "items": 1_682, "users": 943},
    "large": {"events": 1_000_000, "items": 50_000, "users": None},  # users: one per 50 events (20k)
}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


def peak_rss_mb() -> float:
    """The process's peak RSS so far (getrusage: KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class RssSampler(threading.Thread):
    """RSS every `interval` seconds; peak(start, end) is the largest sample in that window."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((time.perf_counter(), rss_mb()))
            time.sleep(self.interval)

    def peak(self, start: float, end: float) -> float:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return round(max(inside + [rss_mb()]), 1)


class Stages:
    """Wraps functions where train() looks them up (module attributes, class methods) to time them;
    a call inside another wrapped call is recorded under "outer/inner"."""

    def __init__(self, sampler: RssSampler) -> None:
        self.sampler = sampler
        self.stack: list[str] = []
        self.records: dict[str, dict[str, float]] = {}
        self.missing: list[str] = []

    def wrap(self, owner: Any, name: str, label: str | None = None) -> None:
        original = getattr(owner, name, None)
        if original is None:
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
            return
        label = label or name

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            key = "/".join([*self.stack, label])
            self.stack.append(label)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                ended = time.perf_counter()
                self.stack.pop()
                record = self.records.setdefault(key, {"seconds": 0.0, "calls": 0, "peak_rss_mb": 0.0})
                record["seconds"] = round(record["seconds"] + ended - started, 3)
                record["calls"] += 1
                record["peak_rss_mb"] = max(record["peak_rss_mb"], self.sampler.peak(started, ended))
                if len(self.stack) <= 1 and ended - started > 1.0:
                    print(f"  {key}: {ended - started:.1f} s", file=sys.stderr, flush=True)

        setattr(owner, name, timed)


def instrument(stages: Stages) -> None:
    from indexer import cf_models, cf_scoring, model_registry, training

    for name, label in (("read_histories", "read events"), ("item_catalog", "item catalog"),
                        ("split_holdout", "holdout split"), ("choose", "choose settings"),
                        ("fit_final", "final fit"), ("fit_als", None), ("_neighbour_model", "item-item model"),
                        ("fit_ease", None), ("fit_cooccurrence_neighbours", None), ("prune_columns", None),
                        ("interaction_matrix", None), ("content_vectors", None), ("fit_ridge_map", None)):
        stages.wrap(training, name, label)
    stages.wrap(cf_models, "prune_rows")  # called inside fit_cooccurrence_neighbours
    stages.wrap(model_registry, "save_model", "save")
    for method in ("item_item_lists", "top_lists", "candidates", "evaluate", "popularity_ndcg"):
        stages.wrap(cf_scoring.Scorer, method, f"Scorer.{method}")
    stages.wrap(getattr(cf_scoring, "Candidates", None), "ndcg", "Candidates.ndcg")


def _counts(es: Any, settings: Any) -> tuple[int, int] | None:
    """(items, events) already in the prefix's indices; None where they do not exist."""
    from elasticsearch import NotFoundError

    from indexer.lifecycle import alias_name

    try:
        items, events = (int(es.count(index=alias_name(settings, kind))["count"])
                         for kind in ("items", "events"))
    except NotFoundError:
        return None
    return items, events


def run_scale(es: Any, settings: Any, name: str, n_events: int, n_items: int, n_users: int | None,
              do_promote: bool, reuse: bool, stages: Stages, sampler: RssSampler) -> dict[str, Any]:
    from indexer import promotion
    from indexer.training import train

    started = time.perf_counter()
    events = generate(n_events, n_items, n_users=n_users)
    setup: dict[str, Any] = {"synthetic": events.summary(), "catalog_items": n_items}
    if reuse and _counts(es, settings) == (n_items, n_events):
        setup["reused_indices"] = True
    else:
        load_catalog(es, settings, n_items, clusters=50, forcemerge=False)
        setup["catalog_s"] = round(time.perf_counter() - started, 1)
        setup["write_events"] = write_events(es, settings, events)
    del events
    stages.records.clear()

    def promote(version: int) -> dict[str, Any]:
        began = time.perf_counter()
        try:
            return promotion.promote(es, settings, version)
        finally:
            stages.records["promote"] = {"seconds": round(time.perf_counter() - began, 3), "calls": 1,
                                         "peak_rss_mb": sampler.peak(began, time.perf_counter())}

    rss_before = rss_mb()
    began = time.perf_counter()
    result = train(es, settings, promote=promote if do_promote else None)
    total = time.perf_counter() - began
    info = result.info
    if result.version is not None:  # save_model records the artifact size in the registry's copy of the info
        from indexer.model_registry import load_model

        saved = load_model(es, settings, result.version)
        info["artifact_bytes"] = saved.info.get("artifact_bytes") if saved else None
    top = ("read events", "item catalog", "holdout split", "choose settings", "final fit", "save", "promote")
    accounted = sum(stages.records[k]["seconds"] for k in top if k in stages.records)
    factors = info.get("factors", 0) * info.get("items", 0)
    return {
        "scale": name, "setup": setup, "state": result.state, "reason": result.reason, "version": result.version,
        "train_total_s": round(total, 2), "stages": dict(stages.records),
        "unaccounted_s": round(total - accounted, 2),
        "memory": {"rss_before_train_mb": round(rss_before, 1),
                   "peak_rss_during_train_mb": sampler.peak(began, time.perf_counter()),
                   "process_peak_rss_mb_so_far": peak_rss_mb()},
        "model": {"users": info.get("users"), "items": info.get("items"), "interactions": info.get("interactions"),
                  "neighbour_weights": info.get("neighbour_weights"), "factors": info.get("factors"),
                  "factor_values": factors, "factor_mb": round(factors * 4 / 2**20, 1),
                  "artifact_bytes": info.get("artifact_bytes")},
        "params": info.get("params"), "metrics": info.get("metrics"),
        "promotion": {k: v for k, v in (info.get("promotion") or {}).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", nargs="+", choices=sorted(SCALES), default=["ml100k", "large"])
    parser.add_argument("--events", type=int, help="override the scale's event count (one scale only)")
    parser.add_argument("--items", type=int)
    parser.add_argument("--users", type=int)
    parser.add_argument("--no-promote", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the indices in place (see --reuse)")
    parser.add_argument("--reuse", action="store_true",
                        help="train on the indices a --keep run left when their counts match (skips the setup)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    settings, es = bench_clients(timeout=120)
    sampler = RssSampler()
    sampler.start()
    stages = Stages(sampler)
    instrument(stages)
    report: dict[str, Any] = {"benchmark": "training", "note": "synthetic events and items; one process; "
                              "times on a shared 2-core machine", "missing_hooks": stages.missing, "runs": []}
    # Smallest first, so the process-wide peak RSS (monotonic) belongs to the largest scale.
    for name in sorted(args.scale, key=lambda s: SCALES[s]["events"] or 0):
        scale = dict(SCALES[name])
        for key in ("events", "items", "users"):
            if getattr(args, key) is not None:
                scale[key] = getattr(args, key)
        try:
            run = run_scale(es, settings, name, int(scale["events"] or 0), int(scale["items"] or 0),
                            scale["users"], not args.no_promote, args.reuse, stages, sampler)
        finally:
            if not args.keep:
                drop_indices(es, PREFIX)
        print(json.dumps({k: run[k] for k in ("scale", "state", "train_total_s", "stages", "memory")}),
              file=sys.stderr)
        report["runs"].append(run)
    report["process_peak_rss_mb"] = peak_rss_mb()
    sampler.stopped.set()
    write_report(report, args.out)


if __name__ == "__main__":
    main()
