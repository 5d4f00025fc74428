"""Load-generation helpers shared by the benchmarks: timed calls on N threads for a fixed time, latency
percentiles, HTTP load over loopback, and the API under one of several WSGI servers for the duration of a
benchmark. Not a benchmark itself."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import urllib3

from indexer.telemetry import percentile

__all__ = ["SERVERS", "bench_clients", "ms", "run_load", "server_command", "start_api", "summary", "timed_calls"]


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    return {"requests": len(latencies), "req_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2),
            "p99_ms": round(percentile(latencies, 99), 2)}


def ms(values: list[float], name: str = "", digits: int = 2) -> dict[str, float]:
    """p50 and p99 of `values`, keyed `<name>_p50_ms` (or plain `p50` without a name)."""
    prefix, unit = (f"{name}_", "_ms") if name else ("", "")
    return {f"{prefix}p50{unit}": round(percentile(values, 50), digits),
            f"{prefix}p99{unit}": round(percentile(values, 99), digits)}


def timed_calls(call: Callable[[random.Random], bool], seconds: float, concurrency: int) -> dict[str, float]:
    """call(rng) on `concurrency` threads (each with its own seeded rng) until `seconds` pass; the
    latency of each call that returns True, the count of those that return False as errors."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            ok = call(rng)
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = summary(latencies, time.perf_counter() - started)
    result["errors"] = errors
    return result


def run_load(url_for: Callable[[random.Random], str], seconds: float, concurrency: int) -> dict[str, float]:
    """GET url_for(rng) over loopback; a 200 counts as a request, anything else as an error."""
    http = urllib3.PoolManager(maxsize=concurrency * 2, timeout=urllib3.Timeout(total=10))
    return timed_calls(lambda rng: http.request("GET", url_for(rng)).status == 200, seconds, concurrency)


# The WSGI servers a benchmark can put the API under (issue 13): gunicorn's sync worker (one request per
# process at a time), its gthread worker (4 threads per process: what the stack ran before), granian (a Rust
# HTTP server, WSGI interface, 4 blocking threads per process; `pip install granian`: measured, not kept, so
# not a dependency).
SERVERS = ("gunicorn-sync", "gunicorn-gthread", "granian")


def server_command(server: str, port: int, workers: int) -> list[str]:
    """The command line serving api:create_app() on 127.0.0.1:port with `server` and `workers` processes."""
    if server == "granian":
        return [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--blocking-threads", "4", "--no-ws", "--factory", "api:create_app"]
    threads = {"gunicorn-sync": "1", "gunicorn-gthread": "4"}[server]
    worker_class = "sync" if threads == "1" else "gthread"
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            "--worker-class", worker_class, "--threads", threads, "api:create_app()"]


def write_report(report: Mapping[str, Any], out: Path | None) -> None:
    """A benchmark's result: JSON on stdout, and into `out` when given."""
    text = json.dumps(report, indent=2)
    if out:
        out.write_text(text)
    print(text)


def start_api(repo: Path, port: int, workers: int, log: Path,
              env: Mapping[str, str] | None = None, server: str = "gunicorn-gthread") -> subprocess.Popen[bytes]:
    """`server` (one of SERVERS) serving api:create_app() on 127.0.0.1:port in its own session (extra
    environment `env`), once /ready answers."""
    with log.open("ab") as out:
        api = subprocess.Popen(server_command(server, port, workers),
                               cwd=repo, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, **(env or {})})
    http = urllib3.PoolManager()
    for _ in range(120):
        try:
            if http.request("GET", f"http://127.0.0.1:{port}/ready", timeout=2).status == 200:
                break
        except urllib3.exceptions.HTTPError:
            pass
        time.sleep(0.5)
    return api


def bench_clients(timeout: float) -> tuple[Any, Any]:
    """(settings, Elasticsearch client) of a benchmark process, which runs its clean-up on a plain kill."""
    from indexer.clients import make_es
    from indexer.settings import get_settings

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = get_settings()
    return settings, make_es(settings, timeout=timeout)
