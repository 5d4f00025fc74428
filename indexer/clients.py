"""Builds the Elasticsearch and Redis clients from the settings; every call they make has a timeout."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import orjson
from elasticsearch import Elasticsearch
from elasticsearch.serializer import NdjsonSerializer, OrjsonSerializer
from redis import Redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError

from indexer.settings import Settings, parse_redis_cluster_url


class OrjsonNdjsonSerializer(NdjsonSerializer):
    """NDJSON bodies (msearch, bulk) line by line through orjson, as the client's OrjsonSerializer does for
    JSON: a request's query vectors and its responses' hits are most of what the client encodes and decodes."""

    def json_dumps(self, data: Any) -> bytes:
        return orjson.dumps(data, default=self.default, option=orjson.OPT_SERIALIZE_NUMPY)

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


def make_es(settings: Settings, *, timeout: float | None = None) -> Elasticsearch:
    """An Elasticsearch client for the configured node or cluster (every URL in HYBRIDREC_ES_URL).

    Only a connection error is retried, and only on another node: the node that refused is marked dead
    and the request goes to the next one, so a node that dies costs no request while another answers.
    Nothing else is retried here (no timeouts, no status codes): bulk 429s are retried by the bulk helper
    and transient failures of a task by Celery, so retries never stack on several layers.
    """
    hosts = [url.strip() for url in settings.es_url.split(",")]
    kwargs: dict[str, Any] = {
        "request_timeout": timeout if timeout is not None else settings.es_timeout,
        "max_retries": len(hosts) - 1,
        "retry_on_status": (),
        "retry_on_timeout": False,
        # orjson (a dependency already, for the API's responses) instead of the standard library's json.
        "serializers": {OrjsonSerializer.mimetype: OrjsonSerializer(),
                        OrjsonNdjsonSerializer.mimetype: OrjsonNdjsonSerializer()},
    }
    if settings.es_api_key:
        kwargs["api_key"] = settings.es_api_key
    elif settings.es_username and settings.es_password:
        kwargs["basic_auth"] = (settings.es_username, settings.es_password)
    if settings.es_ca_cert is not None:
        kwargs["ca_certs"] = str(settings.es_ca_cert)
    return Elasticsearch(hosts, **kwargs)


# What a Redis Cluster answers while a primary fails over or slots move, besides connection errors and
# timeouts: transient, like them (the API answers 503, tasks retry).
REDIS_CLUSTER_TRANSIENT = (ClusterDownError, TryAgainError, SlotNotCoveredError)


def make_redis(settings: Settings) -> Redis:
    """A Redis client (bytes responses) with connect and read timeouts; a RedisCluster for a redis+cluster://
    URL, with the same timeouts on every node's connections.

    A cluster client connects at once, to learn which node holds which slots, and follows failovers itself
    (a MOVED reply or a lost node makes it read the slot map again). It refuses a multi-key command or a
    transaction across slots: the keys one call or one WATCH/MULTI takes must share a hash tag (indexer.keys).
    """
    timeouts: dict[str, Any] = {"socket_timeout": settings.redis_timeout,
                                "socket_connect_timeout": settings.redis_timeout, "health_check_interval": 30}
    if settings.redis_cluster:
        url = parse_redis_cluster_url(settings.redis_url)
        nodes = [ClusterNode(host, port) for host, port in url.nodes]  # type: ignore[no-untyped-call]  # untyped
        cluster = RedisCluster(startup_nodes=nodes,
                               username=url.username, password=url.password, **timeouts)
        # RedisCluster is no subclass of Redis but serves the same commands (and pipelines, WATCH/MULTI on one
        # slot); the modules are typed against Redis.
        return cast(Redis, cluster)
    return Redis.from_url(settings.redis_url, **timeouts)


# redis-py types its replies as `bytes | str` (it cannot know decode_responses); make_redis leaves decoding
# off, so every reply is bytes. These narrow a reply and fail loudly on anything else.

def reply_bytes(reply: object) -> bytes:
    """One Redis reply, as the bytes it is."""
    if not isinstance(reply, bytes):
        raise TypeError(f"expected a bytes reply from Redis, got {type(reply).__name__}")
    return reply


def reply_text(reply: object) -> str:
    """One Redis reply decoded as UTF-8."""
    return reply_bytes(reply).decode()


def reply_texts(reply: object) -> list[str]:
    """A list reply (LRANGE, ZRANGE without scores) decoded as UTF-8."""
    if not isinstance(reply, list):
        raise TypeError(f"expected a list reply from Redis, got {type(reply).__name__}")
    return [reply_text(member) for member in reply]


def reply_hash(reply: Mapping[Any, Any]) -> dict[bytes, bytes]:
    """An HGETALL reply with bytes fields and values."""
    return {reply_bytes(field): reply_bytes(value) for field, value in reply.items()}


def reply_scored(reply: object) -> list[tuple[str, float]]:
    """A ZRANGE ... WITHSCORES reply as (member, score) pairs."""
    if not isinstance(reply, list):
        raise TypeError(f"expected a list reply from Redis, got {type(reply).__name__}")
    return [(reply_text(member), float(score)) for member, score in reply]
