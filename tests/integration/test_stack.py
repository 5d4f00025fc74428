"""The stack scripts are idempotent: start twice never starts a second node, stop twice is harmless."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import stack_script

pytestmark = pytest.mark.integration


def _nodes_for(home: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"EmbeddedElasticsearch --home {home}"], capture_output=True, text=True)
    return out.stdout.split()


def test_start_and_stop_twice(tmp_path):
    env = {"HYBRIDREC_STATE_DIR": str(tmp_path), "HYBRIDREC_ES_PORT": "9291",
           "HYBRIDREC_ES_TRANSPORT_PORT": "9391", "HYBRIDREC_REDIS_PORT": "6391", "HYBRIDREC_ES_HEAP": "256m"}

    def stack(*args: str) -> subprocess.CompletedProcess[str]:
        return stack_script(env, *args)

    try:
        first = stack("start", "es", "redis")
        assert first.returncode == 0, first.stderr
        second = stack("start", "es", "redis")
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stderr and "already answers" in second.stderr
        assert len(_nodes_for(tmp_path / "es")) == 1
        status = stack("status")
        assert "answers on :9291" in status.stdout and "answers on :6391" in status.stdout
    finally:
        stop_one = stack("stop", "es", "redis")
        stop_two = stack("stop", "es", "redis")
    assert stop_one.returncode == 0 and stop_two.returncode == 0, stop_one.stderr + stop_two.stderr
    assert "not running" in stop_two.stderr
    assert _nodes_for(tmp_path / "es") == []
    assert "no answer on :9291" in stack("status").stdout
