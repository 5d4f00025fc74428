"""The clients one API process shares across requests, built once in the app factory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery
from elasticsearch import Elasticsearch
from flask import current_app
from redis import Redis

from indexer.celery_config import celery_config
from indexer.clients import make_es, make_redis
from indexer.encoder import get_query_encoder
from indexer.reco_logs import LogQueue
from indexer.recommender import Recommender
from indexer.settings import Settings
from indexer.task_routing import ROUTES


@dataclass
class Services:
    settings: Settings
    es: Elasticsearch
    redis: Redis
    broker: Redis  # read-only use: queue depth for /metrics
    celery: Celery
    recommender: Recommender
    reco_logs: LogQueue

    def enqueue(self, task_name: str, *args: Any) -> str:
        """Send a task by name (the API never imports the workers); returns the task id."""
        result = self.celery.send_task(task_name, args=list(args), queue=ROUTES[task_name])
        return str(result.id)


def build_services(settings: Settings) -> Services:
    celery = Celery("hybridrec-api")
    celery.conf.update(
        **celery_config(settings),
        broker_connection_timeout=settings.redis_timeout,
        # Publishing must not hang a request when Redis is down.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    )
    broker = Redis.from_url(settings.broker_url, socket_timeout=settings.redis_timeout,
                            socket_connect_timeout=settings.redis_timeout)
    es, redis = make_es(settings), make_redis(settings)
    recommender = Recommender(settings, es, redis, lambda: get_query_encoder(settings))
    return Services(settings=settings, es=es, redis=redis, broker=broker, celery=celery, recommender=recommender,
                    reco_logs=LogQueue(redis, settings))


def services() -> Services:
    built: Services = current_app.extensions["hybridrec"]  # by create_app
    return built
