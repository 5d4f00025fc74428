"""Builds the Elasticsearch and Redis clients from the settings; every call they make has a timeout."""
from __future__ import annotations

from elasticsearch import Elasticsearch
from redis import Redis

from indexer.settings import Settings


def make_es(settings: Settings, *, timeout: float | None = None) -> Elasticsearch:
    """An Elasticsearch client for the configured cluster.

    The client does not retry: bulk 429s are retried by the bulk helper and transient
    failures of a task by Celery, so retries never stack on several layers.
    """
    kwargs: dict[str, object] = {
        "request_timeout": timeout if timeout is not None else settings.es_timeout,
        "max_retries": 0,
        "retry_on_timeout": False,
    }
    if settings.es_api_key:
        kwargs["api_key"] = settings.es_api_key
    elif settings.es_username and settings.es_password:
        kwargs["basic_auth"] = (settings.es_username, settings.es_password)
    if settings.es_ca_cert is not None:
        kwargs["ca_certs"] = str(settings.es_ca_cert)
    hosts = [url.strip() for url in settings.es_url.split(",")]
    return Elasticsearch(hosts, **kwargs)  # type: ignore[arg-type]


def make_redis(settings: Settings) -> Redis:
    """A Redis client (bytes responses) with connect and read timeouts."""
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        health_check_interval=30,
    )
