"""gunicorn hooks for the stack: tell prometheus_client when a worker process exits."""
from prometheus_client import multiprocess


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    multiprocess.mark_process_dead(worker.pid)
