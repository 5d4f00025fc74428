"""Helpers the tests share (conftest.py holds only fixtures): the run's index prefix, the stack script,
index clean-up and a real Celery worker subprocess."""
from __future__ import annotations

import atexit
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# This run's own index prefix (conftest.py puts it in the environment before any setting is read).
PREFIX = f"hrtest-{secrets.token_hex(3)}"
REPO = Path(__file__).resolve().parent.parent
# Overridable so that two test runs on one machine do not read each other's worker metrics.
WORKER_METRICS_PORT = int(os.environ.get("HYBRIDREC_TEST_WORKER_METRICS_PORT", "9809"))


# A small catalog of three topics (id, title, description, tag) that several tests index.
SMALL_CATALOG = [
    ("s1", "Voyage to Mars", "Astronauts fly a rocket to the red planet.", "space"),
    ("s2", "Moon landing history", "The Apollo programme and the first steps on the moon.", "space"),
    ("s3", "Telescope for beginners", "Watch planets, stars and galaxies at night.", "space"),
    ("c1", "Pasta cookbook", "Fresh pasta and tomato sauce recipes from Italy.", "cooking"),
    ("c2", "Bread baking", "Sourdough loaves and crusty bread at home.", "cooking"),
    ("c3", "Curry recipes", "Spices, rice and Indian curries for home cooks.", "cooking"),
    ("f1", "Football boots", "Studded shoes for grass pitches and league matches.", "football"),
    ("f2", "World Cup history", "The greatest football tournament and its legendary goals.", "football"),
    ("f3", "Goalkeeper gloves", "Padded gloves for catching the ball.", "football"),
]


def catalog_items(*ids: str) -> list[tuple[str, str, str, str]]:
    """These items of SMALL_CATALOG, in its order."""
    return [row for row in SMALL_CATALOG if row[0] in ids]


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


def index_catalog(es, settings, rows: list[tuple[str, str, str, str]]) -> None:
    """Index small test items, (id, title, description, category) each, through the real indexer."""
    from indexer.catalog import index_items
    from indexer.documents import Item
    from indexer.encoder import get_encoder
    from indexer.lifecycle import alias_name

    items = [Item(id=i, title=t, description=d, category=c, tags=[c], version=1) for i, t, d, c in rows]
    index_items(es, settings, items, get_encoder(settings))
    es.indices.refresh(index=alias_name(settings, "items"))


def _die_with_parent() -> None:
    """Runs in the worker subprocess before exec: the kernel SIGKILLs it when the test run dies, however it
    dies (a SIGKILL included, where no handler runs); its beat and pool follow it (workers/celery_app.py)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


_started: set[WorkerProcess] = set()


@atexit.register
def kill_workers() -> None:
    """Every worker this run started and did not stop: on any exit that runs Python's exit handlers."""
    for worker in list(_started):
        worker.kill()


class WorkerProcess:
    """A real `celery worker` subprocess on the test broker. It never outlives the test run: stopped by its
    fixture, killed at exit (atexit, and SIGTERM/SIGHUP turned into an exit by conftest.py), and by the
    kernel if the run is SIGKILLed (PR_SET_PDEATHSIG)."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None, name: str = "main") -> None:
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:  # the worker writes to its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel=INFO",
                 "--concurrency=1", "-Q", "embed,index,events,train", "--hostname", f"{PREFIX}-{self.name}@%h",
                 "--without-gossip", "--without-mingle"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env,
                preexec_fn=_die_with_parent,
            )
        _started.add(self)
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

    @property
    def hostname(self) -> str:
        return f"{PREFIX}-{self.name}@{socket.gethostname()}"

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and its pool children)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        _started.discard(self)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        _started.discard(self)


def settle_workers(timeout: float = 180.0) -> None:
    """Before a test starts from empty indices: drop what the test broker still holds (a task that ran past
    the 8 s visibility timeout is delivered a second time, and that copy may not run until a later test)
    and wait until every live worker on that broker has finished what it is running, so nothing from an
    earlier test writes into this one."""
    broker = os.environ["HYBRIDREC_BROKER_URL"]
    live = [w for w in _started if w.proc and w.proc.poll() is None and w.env.get("HYBRIDREC_BROKER_URL") == broker]
    if not live:
        return
    from celery import Celery
    from redis import Redis

    names = [w.hostname for w in live]
    deadline = time.time() + timeout
    with Celery(broker=broker) as app, Redis.from_url(broker, socket_timeout=10) as client:
        while True:
            # Queues, unacknowledged copies and results of tests already over; not the exchange bindings
            # (_kombu.binding.*), without which nothing is routed and no worker hears a control command.
            stale = [k for k in client.scan_iter(count=1000) if not k.startswith(b"_kombu.binding.")]
            if stale:
                client.delete(*stale)
            replies = app.control.inspect(destination=names, timeout=2.0, limit=len(names)).active() or {}
            if len(replies) == len(names) and not any(replies.values()):
                return
            if time.time() > deadline:
                raise RuntimeError(f"workers {names} still busy after {timeout:.0f} s: {replies}")
            time.sleep(0.2)
