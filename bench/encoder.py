"""Encoder benchmark: torch against the ONNX export (fp32 and int8) on the demo catalog (MovieLens-100K):
cosine to torch's vectors on the titles, kNN recall@10 against torch's neighbour lists, single-query latency
(batch 1) p50/p99, items/s on indexing-sized batches of item texts (the backends take turns on each text
or batch, so load from other work falls on all alike), and the API process's peak RSS with each
query encoder (and whether it imported torch). Prints JSON. All backends run in this one process and run.

Usage: .venv/bin/python bench/encoder.py [--queries 300] [--out FILE]
Needs `hybridrec encoder export` first; the API-RSS probe also needs ES and Redis (--redis-url, a DB of yours).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.load import write_report  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")
# VmHWM, not ru_maxrss: the latter survives fork + exec, so it would report this (torch-loaded) process.
RSS_PROBE = """
import re, sys
from pathlib import Path
from api.app import create_app
create_app()
print(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1), 'torch' in sys.modules)
"""


def top_k(queries: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k item rows by dot product (the vectors are normalised), best first."""
    scores = queries @ items.T
    part = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def interleaved(encoders: dict[str, Any], batches: list[list[str]]) -> dict[str, list[float]]:
    """Seconds per batch for every backend, the backends taking turns on each batch, so that load from
    other work on the machine falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for batch in batches:
        for name, encoder in encoders.items():
            began = time.perf_counter()
            encoder.encode(batch)
            times[name].append(time.perf_counter() - began)
    return times


def api_rss(backend: str, redis_url: str) -> dict[str, Any]:
    """Peak RSS of a process that builds the API app (start-up warm-up included) with this query encoder."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYBRIDREC_QUERY_ENCODER": backend,
           "HYBRIDREC_INDEX_PREFIX": "hrbench-encoder", "HYBRIDREC_REDIS_URL": redis_url}
    out = subprocess.run([sys.executable, "-c", RSS_PROBE], env=env, capture_output=True, text=True, timeout=300,
                         check=True).stdout.split()
    return {"peak_rss_mb": round(int(out[-2]) / 1024, 1), "torch_imported": out[-1] == "True"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=300, help="single-text encodes timed per backend")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6", help="for the API-RSS probe")
    parser.add_argument("--no-rss", action="store_true", help="skip the API-RSS probe (needs ES and Redis)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from indexer.datasets import movielens_items, recbole_wheel
    from indexer.encoder import TorchEncoder, item_text
    from indexer.onnx_encoder import OnnxEncoder
    from indexer.settings import get_settings

    settings = get_settings()
    movies = movielens_items(recbole_wheel(REPO / ".hybridrec" / "datasets"))
    titles = [m["title"] for m in movies]
    texts = [item_text(m["title"], m.get("description"), m.get("tags")) for m in movies]
    encoders: dict[str, Any] = {
        "torch": TorchEncoder(settings.model, "cpu", settings.batch_size),
        "onnx": OnnxEncoder.load(settings.model, settings.onnx_dir, "fp32", settings.batch_size),
        "onnx-int8": OnnxEncoder.load(settings.model, settings.onnx_dir, "int8", settings.batch_size),
    }
    report: dict[str, Any] = {"benchmark": "encoder", "model": encoders["torch"].model_id, "titles": len(titles),
                              "batch_size": settings.batch_size, "cpus": os.cpu_count(),
                              "load_avg_at_start": os.getloadavg()[0], "backends": {}}
    title_vecs = {name: encoder.encode(titles) for name, encoder in encoders.items()}
    item_vecs = {name: encoder.encode(texts) for name, encoder in encoders.items()}  # also the warm-up
    batch = settings.batch_size
    index_times = interleaved(encoders, [texts[i:i + batch] for i in range(0, len(texts), batch)])
    query_times = interleaved(encoders, [[t] for t in titles[: args.queries]])
    for name in encoders:
        ms = np.asarray(query_times[name]) * 1000
        report["backends"][name] = {
            "query_latency": {"p50_ms": round(float(np.percentile(ms, 50)), 2),
                              "p99_ms": round(float(np.percentile(ms, 99)), 2)},
            "index_items_per_s": round(len(texts) / sum(index_times[name]), 1)}
        print(f"{name}: {report['backends'][name]}", file=sys.stderr)
    truth = top_k(title_vecs["torch"], item_vecs["torch"], 10)
    for name in ("onnx", "onnx-int8"):
        cosine = (title_vecs[name] * title_vecs["torch"]).sum(1)
        report["backends"][name].update({
            "cosine_to_torch_titles": {"mean": round(float(cosine.mean()), 5), "min": round(float(cosine.min()), 5),
                                       "p1": round(float(np.percentile(cosine, 1)), 5)},
            # Queries (titles) by this backend against the items torch indexed: the serving mix.
            "recall_at_10_queries_vs_torch_items": round(recall(top_k(title_vecs[name], item_vecs["torch"], 10),
                                                                truth), 4),
            # Items and queries both by this backend: an index built with it.
            "recall_at_10_all_this_backend": round(recall(top_k(title_vecs[name], item_vecs[name], 10), truth), 4),
        })
    torch_p50 = report["backends"]["torch"]["query_latency"]["p50_ms"]
    torch_ips = report["backends"]["torch"]["index_items_per_s"]
    for name in ("onnx", "onnx-int8"):
        entry = report["backends"][name]
        entry["query_p50_ratio_to_torch"] = round(entry["query_latency"]["p50_ms"] / torch_p50, 3)
        entry["index_items_per_s_ratio_to_torch"] = round(entry["index_items_per_s"] / torch_ips, 3)
    if not args.no_rss:
        report["api_process"] = {name: api_rss(name, args.redis_url) for name in BACKENDS}
    report["load_avg_at_end"] = os.getloadavg()[0]
    write_report(report, args.out)


if __name__ == "__main__":
    main()
