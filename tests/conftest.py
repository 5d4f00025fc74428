"""Shared fixtures. Integration tests use the real embedded Elasticsearch node and Redis (scripts/test.sh
starts them), their own index prefix and Redis databases, and a real Celery worker subprocess; the helpers
they share are in tests/helpers.py."""
from __future__ import annotations

import os
import signal

import pytest

from tests.helpers import PREFIX, WORKER_METRICS_PORT, WorkerProcess, drop_test_indices, settle_workers

# Isolate the test run from a demo stack on the same node: own prefix, own Redis databases.
os.environ.setdefault("HYBRIDREC_ES_URL", "http://127.0.0.1:9200")
os.environ["HYBRIDREC_INDEX_PREFIX"] = PREFIX
os.environ["HYBRIDREC_REDIS_URL"] = os.environ.get("HYBRIDREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
os.environ["HYBRIDREC_BROKER_URL"] = os.environ.get("HYBRIDREC_TEST_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ["HYBRIDREC_VISIBILITY_TIMEOUT"] = "8"  # a killed worker's task comes back quickly in tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _exit_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # pytest tears fixtures down; atexit kills what is left


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped with SIGTERM or SIGHUP (a CI timeout, a closed terminal) still stops its Celery workers.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)


@pytest.fixture(scope="session")
def settings():
    from indexer.settings import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def es(settings):
    from indexer.clients import make_es

    client = make_es(settings, timeout=30)
    if not client.ping():
        pytest.fail(f"no Elasticsearch at {settings.es_url}: run the tests with scripts/test.sh")
    yield client
    drop_test_indices(client)


@pytest.fixture(scope="session")
def redis_client(settings):
    from redis import Redis

    from indexer.clients import make_redis

    client = make_redis(settings)
    client.flushdb()
    Redis.from_url(settings.broker_url).flushdb()
    yield client
    client.flushdb()


@pytest.fixture()
def fresh(es, redis_client, settings):
    """Empty indices (v1 behind each alias), empty Redis and idle workers for one test."""
    from indexer.lifecycle import ensure_indices

    settle_workers()
    drop_test_indices(es)
    redis_client.flushdb()
    ensure_indices(es, settings)
    yield
    drop_test_indices(es)


@pytest.fixture(scope="session")
def worker(es, redis_client, tmp_path_factory):
    folder = tmp_path_factory.mktemp("worker")
    (folder / "prometheus").mkdir()
    process = WorkerProcess(folder / "worker.log", env={"HYBRIDREC_WORKER_METRICS_PORT": str(WORKER_METRICS_PORT),
                                                        "PROMETHEUS_MULTIPROC_DIR": str(folder / "prometheus")})
    process.start()
    yield process
    process.stop()


@pytest.fixture()
def app(settings, es, redis_client):
    from api import create_app

    return create_app({"TESTING": True}, settings=settings)


@pytest.fixture()
def client(app):
    return app.test_client()
