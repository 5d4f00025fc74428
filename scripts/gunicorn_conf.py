"""gunicorn hooks for the stack: tell prometheus_client when a worker process exits."""
from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:  # gunicorn's Arbiter and Worker; gunicorn ships no types
    multiprocess.mark_process_dead(worker.pid)
