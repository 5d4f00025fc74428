"""The Celery application: Redis broker, named queues, acks_late, one prefetch per process."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

from celery import Celery
from celery.signals import beat_embedded_init, task_postrun, task_prerun, worker_init, worker_process_init
from kombu import Queue

from indexer.celery_config import celery_config
from indexer.settings import get_settings
from indexer.task_routing import ALL_QUEUES, FLUSH_RECO_LOGS, QUEUE_INDEX, ROUTES, SNAPSHOT_PROFILES, TRAIN_IF_DUE
from workers.visibility import VisibilityKeeper

TASK_ROUTES = {name: {"queue": queue} for name, queue in ROUTES.items()}


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("hybridrec", include=["workers.tasks", "workers.metrics"])
    app.conf.update(
        **celery_config(settings),
        task_queues=[Queue(name) for name in ALL_QUEUES],
        task_default_queue=QUEUE_INDEX,
        task_routes=TASK_ROUTES,
        # A task is acknowledged only after it finished, and a worker that dies mid-task
        # gives its message back: every task is idempotent, so running it again is safe.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        result_serializer="json",
        accept_content=["json"],
        result_expires=24 * 3600,
        task_track_started=True,
        worker_hijack_root_logger=False,
        # Only with `celery -A workers.celery_app beat`: profiles land in the users index every 10 minutes.
        beat_schedule={"snapshot-profiles": {"task": SNAPSHOT_PROFILES, "schedule": 600.0},
                       "flush-reco-logs": {"task": FLUSH_RECO_LOGS, "schedule": 5.0},
                       # Trains only when enough new events arrived since the serving model (settings).
                       "train-if-due": {"task": TRAIN_IF_DUE, "schedule": float(settings.train_interval_s)}},
    )
    return app


app = make_celery()

_PR_SET_PDEATHSIG = 1
_main_pid = os.getpid()


@worker_init.connect
def _remember_main_process(**_: Any) -> None:
    """The worker's main process, the parent the embedded beat and the pool processes are forked from
    (recorded at worker start: `--detach` forks after the app is imported)."""
    global _main_pid
    _main_pid = os.getpid()


def die_with_parent(signum: int) -> None:
    """Have the kernel send `signum` to this process when its parent dies, even by SIGKILL (Linux; elsewhere
    a no-op). Without it a kill -9 of the worker leaves the embedded beat running, and the restarted worker
    starts a second one: every periodic task twice."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != _main_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signum)


@beat_embedded_init.connect
def _beat_dies_with_worker(**_: Any) -> None:
    die_with_parent(signal.SIGTERM)  # beat saves its schedule on SIGTERM


@worker_process_init.connect
def _pool_process_dies_with_worker(**_: Any) -> None:
    # A task still running after its worker died would run beside its own redelivery.
    die_with_parent(signal.SIGKILL)


_keeper: VisibilityKeeper | None = None


def _visibility_keeper() -> VisibilityKeeper:
    """This process's keeper, made on first use (after the pool forked), on the broker's Redis."""
    global _keeper
    if _keeper is None:
        from redis import Redis

        settings = get_settings()
        client = Redis.from_url(settings.broker_url, socket_timeout=settings.redis_timeout,
                                socket_connect_timeout=settings.redis_timeout)
        _keeper = VisibilityKeeper(client, interval=max(1.0, settings.visibility_timeout / 4))
    return _keeper


def _delivery_tag(task: Any) -> str | None:
    """The broker's tag for the message of the task now running (None for a task called in process)."""
    if task is None:
        return None
    properties = getattr(task.request, "properties", None) or {}
    tag = properties.get("delivery_tag")
    return str(tag) if tag else None


@task_prerun.connect
def _hold_message(task: Any = None, **_: Any) -> None:
    """A task that runs past the visibility timeout is not delivered again while it runs (workers/visibility.py)."""
    if tag := _delivery_tag(task):
        _visibility_keeper().hold(tag)


@task_postrun.connect
def _release_message(task: Any = None, **_: Any) -> None:
    if (tag := _delivery_tag(task)) and _keeper is not None:
        _keeper.release(tag)
