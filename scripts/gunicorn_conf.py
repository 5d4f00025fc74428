"""gunicorn settings for the stack: tell prometheus_client when a worker process exits, and answer the
requests gunicorn refuses itself (a request line or headers over its limits, a malformed request) with
the API's problem+json body instead of gunicorn's HTML page."""
import json
from typing import Any

from gunicorn import util
from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:  # gunicorn's Arbiter and Worker; gunicorn ships no types
    multiprocess.mark_process_dead(worker.pid)


def write_problem(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's error writer (gunicorn.util.write_error, which its workers call for the requests they
    refuse before the app sees them), in the API's error shape."""
    body = json.dumps({"type": "about:blank", "title": reason, "status": status_int,
                       "detail": mesg or reason}).encode("utf-8")
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


# This file is loaded by the master before it forks, so every worker answers this way.
util.write_error = write_problem
