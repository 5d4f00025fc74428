"""Shared fixtures. Integration tests use the real embedded Elasticsearch node and Redis (scripts/test.sh
starts them), their own index prefix and Redis databases, and a real Celery worker subprocess."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Isolate the test run from a demo stack on the same node: own prefix, own Redis databases.
PREFIX = f"hrtest-{secrets.token_hex(3)}"
os.environ.setdefault("HYBRIDREC_ES_URL", "http://127.0.0.1:9200")
os.environ["HYBRIDREC_INDEX_PREFIX"] = PREFIX
os.environ["HYBRIDREC_REDIS_URL"] = os.environ.get("HYBRIDREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
os.environ["HYBRIDREC_BROKER_URL"] = os.environ.get("HYBRIDREC_TEST_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ["HYBRIDREC_VISIBILITY_TIMEOUT"] = "8"  # a killed worker's task comes back quickly in tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
WORKER_METRICS_PORT = 9809


@pytest.fixture(scope="session")
def settings():
    from indexer.settings import get_settings

    return get_settings()


def stack_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/stack.sh with these HYBRIDREC_* overrides (a private node, Redis or state folder)."""
    return subprocess.run(["bash", str(REPO / "scripts" / "stack.sh"), *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=240)


def run_stack(env: dict[str, str], *args: str) -> None:
    done = stack_script(env, *args)
    assert done.returncode == 0, done.stderr


def drop_test_indices(client, pattern: str = f"{PREFIX}-*") -> None:
    """Delete every index of this run (wildcard deletes are refused by default, so name them)."""
    names = list(client.indices.get(index=pattern, ignore_unavailable=True, allow_no_indices=True).body)
    if names:
        client.indices.delete(index=names)


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
    """Empty indices (v1 behind each alias) and empty Redis for one test."""
    from indexer.lifecycle import ensure_indices

    drop_test_indices(es)
    redis_client.flushdb()
    ensure_indices(es, settings)
    yield
    drop_test_indices(es)


class WorkerProcess:
    """A real `celery worker` subprocess on the test broker."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None, name: str = "main") -> None:
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel=INFO",
             "--concurrency=1", "-Q", "embed,index,events,train", "--hostname", f"{PREFIX}-{self.name}@%h",
             "--without-gossip", "--without-mingle"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env,
        )
        from celery import Celery

        app = Celery(broker=self.env["HYBRIDREC_BROKER_URL"])  # ping on the broker this worker listens to
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited early, see {self.log_path}")
            replies = app.control.ping(timeout=1.0) or []
            if any(f"{PREFIX}-{self.name}@" in name for reply in replies for name in reply):
                return
        self.kill()  # never leave a stray worker consuming this broker after a failed start
        raise RuntimeError(f"celery worker did not answer a ping within 90 s, see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and its pool children)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


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
