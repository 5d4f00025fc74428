"""Cluster settings: every URL reaches the client, and new indices take their shard and replica counts
from the settings (no server: the client is built, never called; index bodies are plain dicts)."""
from __future__ import annotations

import socket

import pytest
from elasticsearch import ConnectionError as ESConnectionError

from indexer.clients import make_es
from indexer.mappings import INDEX_KINDS, index_definition
from indexer.settings import SettingsError, load_settings


def _dead_urls(count: int) -> list[str]:
    """Loopback URLs where nothing listens: a connection to each is refused at once."""
    ports = []
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return [f"http://127.0.0.1:{port}" for port in ports]


def test_a_refused_connection_moves_on_to_each_other_node_once() -> None:
    urls = _dead_urls(3)
    client = make_es(load_settings(es_url=", ".join(urls)))
    assert sorted(node.config.port for node in client.transport.node_pool.all()) == sorted(
        int(url.rsplit(":", 1)[1]) for url in urls)
    with pytest.raises(ESConnectionError) as failure:
        client.info()
    # Two earlier attempts ride along with the last one: every node was tried, none twice.
    assert len(failure.value.errors) == 2


def test_one_url_never_retries() -> None:
    client = make_es(load_settings(es_url=_dead_urls(1)[0]))
    with pytest.raises(ESConnectionError) as failure:
        client.info()
    assert failure.value.errors == ()


def test_defaults_are_one_shard_and_auto_expanding_replicas() -> None:
    settings = load_settings()
    for kind in INDEX_KINDS:
        body = index_definition(kind, settings)["settings"]
        assert body["number_of_shards"] == 1
        assert body["auto_expand_replicas"] == "0-1"
        assert "number_of_replicas" not in body


def test_cluster_counts_replace_the_auto_expand_range() -> None:
    settings = load_settings(es_shards=3, es_replicas=1)
    for kind in INDEX_KINDS:
        body = index_definition(kind, settings)["settings"]
        assert body["number_of_shards"] == 3
        assert body["number_of_replicas"] == 1
        assert "auto_expand_replicas" not in body


def test_zero_replicas_is_a_fixed_count_not_the_default() -> None:
    body = index_definition("events", load_settings(es_replicas=0))["settings"]
    assert body["number_of_replicas"] == 0
    assert "auto_expand_replicas" not in body


@pytest.mark.parametrize("overrides", [{"es_shards": 0}, {"es_replicas": -1}, {"es_url": "http://a:9200,"}])
def test_bad_counts_and_urls_fail_at_start_up(overrides: dict[str, object]) -> None:
    with pytest.raises(SettingsError):
        load_settings(**overrides)
