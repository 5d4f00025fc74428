"""The Celery application: Redis broker, named queues, acks_late, one prefetch per process."""
from __future__ import annotations

from celery import Celery
from kombu import Queue

from indexer.celery_config import celery_config
from indexer.settings import get_settings
from indexer.tasknames import ALL_QUEUES, FLUSH_RECO_LOGS, QUEUE_INDEX, ROUTES, SNAPSHOT_PROFILES, TRAIN_IF_DUE

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
