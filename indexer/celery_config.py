"""The Celery settings both ends share: the API that sends tasks (api/services.py) and the workers that
run them (workers/celery_app.py). Plain settings, no Celery import: each end builds its own app."""
from __future__ import annotations

from typing import Any

from indexer.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """Broker, result backend, serialisation and Redis timeouts, the same on both ends."""
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.broker_url,
        "task_serializer": "json",
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # An unacknowledged message (its worker was killed) is delivered again after this long.
            "visibility_timeout": settings.visibility_timeout,
            "socket_timeout": settings.redis_timeout,
            "socket_connect_timeout": settings.redis_timeout,
        },
        "redis_socket_timeout": settings.redis_timeout,
        "redis_socket_connect_timeout": settings.redis_timeout,
    }
