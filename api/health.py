"""Liveness, readiness (Elasticsearch and Redis answer) and Prometheus metrics."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Blueprint, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from api.auth import scope
from api.services import services
from indexer.task_routing import ALL_QUEUES

bp = Blueprint("health", __name__)

REQUESTS = Counter("hybridrec_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram("hybridrec_http_request_seconds", "HTTP request latency", ["endpoint"],
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


@bp.before_app_request
def _start_timer() -> None:
    g.started = time.perf_counter()


@bp.after_app_request
def _record(response: Response) -> Response:
    endpoint = request.endpoint or "unknown"
    started = g.get("started")
    if started is not None:
        LATENCY.labels(endpoint).observe(time.perf_counter() - started)
    REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
    return response


@bp.get("/health")
@scope("open")
def health() -> Response:
    """The process is up (it does not look at the backends: that is /ready)."""
    return jsonify(status="ok")


@bp.get("/ready")
@scope("open")
def ready() -> tuple[Response, int]:
    """Ready when Elasticsearch and Redis both answer."""
    svc = services()
    checks: dict[str, bool | str] = {}
    try:
        checks["elasticsearch"] = bool(svc.es.options(request_timeout=2).ping())
    except Exception as exc:  # any failure means not ready; the reason is reported
        checks["elasticsearch"] = False
        checks["elasticsearch_error"] = type(exc).__name__
    try:
        checks["redis"] = bool(svc.redis.ping())
    except Exception as exc:  # same: report, do not raise
        checks["redis"] = False
        checks["redis_error"] = type(exc).__name__
    ok = checks["elasticsearch"] is True and checks["redis"] is True
    return jsonify(status="ready" if ok else "not ready", checks=checks), 200 if ok else 503


class QueueDepth(Collector):
    """Celery queue depth, read from the broker at scrape time (a Redis list per queue)."""

    def __init__(self, broker: Redis) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("hybridrec_queue_depth", "messages waiting in a Celery queue", labels=["queue"])
        try:
            for queue in ALL_QUEUES:
                family.add_metric([queue], float(self.broker.llen(queue)))
        except RedisError:
            return  # no broker, no gauge: the scrape itself still succeeds
        yield family


@bp.get("/metrics")
@scope("open")
def metrics() -> Response:
    """Prometheus metrics. Under gunicorn (several processes) the stack sets PROMETHEUS_MULTIPROC_DIR and
    every process's samples are aggregated here; otherwise this process's registry is served."""
    svc = services()
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    body = generate_latest(registry)
    queues = CollectorRegistry()
    queues.register(QueueDepth(svc.broker))
    body += generate_latest(queues)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)
