"""Indexing benchmark: end-to-end items/s (JSONL file -> worker -> searchable) beside the raw encoder's
items/s on the same texts, in the same run; plus the worker's peak memory. Prints JSON.

Usage: HYBRIDREC_VENV=... .venv/bin/python bench/indexing.py [--items N]
Needs the embedded node and Redis (scripts/stack.sh start). Uses its own index prefix and Redis DBs.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

PREFIX = f"hrbench-{secrets.token_hex(3)}"
os.environ.update(HYBRIDREC_INDEX_PREFIX=PREFIX, HYBRIDREC_REDIS_URL="redis://127.0.0.1:6379/11",
                  HYBRIDREC_BROKER_URL="redis://127.0.0.1:6379/12", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                  TOKENIZERS_PARALLELISM="false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def peak_rss_kb(pid: int) -> int:
    """Largest VmHWM among the process and its children (the prefork pool child does the encoding)."""
    peak = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1682, help="how many MovieLens-100K movies (max 1682)")
    args = parser.parse_args()

    from indexer import lifecycle
    from indexer.clients import make_es
    from indexer.datasets import movielens_items, recbole_wheel
    from indexer.documents import validate_items
    from indexer.encoder import get_encoder
    from indexer.settings import get_settings

    settings = get_settings()
    es = make_es(settings, timeout=60)
    items = movielens_items(recbole_wheel(REPO / ".hybridrec" / "datasets"))[: args.items]
    texts = [i.text() for i in validate_items(items, max_text_chars=settings.max_text_chars)[0]]

    encoder = get_encoder(settings)
    encoder.encode(texts[:64])  # warm-up
    start = time.perf_counter()
    encoder.encode(texts)
    raw_s = time.perf_counter() - start

    log = open(REPO / ".hybridrec" / "bench-worker.log", "ab")
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-c", "1",
                               "-Q", "embed,index,events,train", "--hostname", f"{PREFIX}@%h", "--without-gossip",
                               "--without-mingle", "--loglevel=WARNING"], cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        from workers.celery_app import app
        from workers.tasks import index_items

        lifecycle.ensure_indices(es, settings)
        while not any(PREFIX in n for r in (app.control.ping(timeout=1.0) or []) for n in r):
            time.sleep(0.5)
        index_items.delay(items[:8]).get(timeout=300)  # loads the model in the pool child before timing
        alias = lifecycle.alias_name(settings, "items")
        from workers.cli import ingest

        path = REPO / ".hybridrec" / "bench-items.jsonl"
        path.write_text("\n".join(json.dumps({**i, "id": f"b{i['id']}"}) for i in items) + "\n")
        from workers.cli import _read_items

        start = time.perf_counter()
        totals = ingest(_read_items(path), sync=False)
        while True:
            es.indices.refresh(index=alias)
            if es.count(index=alias, query={"prefix": {"id": "b"}})["count"] >= len(items):
                break
            time.sleep(0.05)
        e2e_s = time.perf_counter() - start
        peak_kb = peak_rss_kb(worker.pid)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        names = list(es.indices.get(index=f"{PREFIX}-*").body)
        if names:
            es.indices.delete(index=names)

    print(json.dumps({
        "benchmark": "indexing", "items": len(items), "device": encoder.device, "model": encoder.model_id,
        "batch_size": settings.batch_size, "worker_concurrency": 1,
        "raw_encoder_items_per_s": round(len(texts) / raw_s, 1),
        "end_to_end_items_per_s": round(len(items) / e2e_s, 1),
        "ratio_end_to_end_over_raw": round((len(items) / e2e_s) / (len(texts) / raw_s), 3),
        "indexed": totals["indexed"], "failed": len(totals["failed"]),
        "worker_peak_rss_mib": round(peak_kb / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
