"""Celery task metrics (duration, outcome) for Prometheus, served by the worker on HYBRIDREC_WORKER_METRICS_PORT."""
from __future__ import annotations

import os
import time
from typing import Any

from celery.signals import task_failure, task_postrun, task_prerun, task_retry, worker_init
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

TASK_SECONDS = Histogram("hybridrec_task_seconds", "Celery task run time", ["task"],
                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800))
TASK_OUTCOMES = Counter("hybridrec_task_outcomes_total", "Celery task outcomes", ["task", "outcome"])
_started: dict[str, float] = {}


@task_prerun.connect
def _prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    started = _started.pop(task_id or "", None)
    name = getattr(task, "name", "unknown")
    if started is not None:
        TASK_SECONDS.labels(name).observe(time.perf_counter() - started)
    if state == "SUCCESS":
        TASK_OUTCOMES.labels(name, "success").inc()


@task_failure.connect
def _failure(sender: Any = None, **_: Any) -> None:
    TASK_OUTCOMES.labels(getattr(sender, "name", "unknown"), "failure").inc()


@task_retry.connect
def _retry(sender: Any = None, **_: Any) -> None:
    TASK_OUTCOMES.labels(getattr(sender, "name", "unknown"), "retry").inc()


@worker_init.connect
def _serve(**_: Any) -> None:
    """In the main worker process: serve the pool children's samples (prometheus multiprocess mode)."""
    port = int(os.environ.get("HYBRIDREC_WORKER_METRICS_PORT", "0"))
    if not port:
        return
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, addr="127.0.0.1", registry=registry)
    else:
        start_http_server(port, addr="127.0.0.1")
