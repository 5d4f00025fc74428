"""The API under scripts/stack.sh (gunicorn --daemon): its JSON log lines reach the state folder's api.log,
and two stacks on one machine each keep their own gunicorn control socket."""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import PREFIX, stack_script

pytestmark = pytest.mark.integration


def _env(state: Path, port: int) -> dict[str, str]:
    # Elasticsearch on a port where none answers: a request that needs it logs "backend unavailable".
    return {"HYBRIDREC_STATE_DIR": str(state), "HYBRIDREC_API_PORT": str(port), "HYBRIDREC_API_WORKERS": "1",
            "HYBRIDREC_VENV": str(Path(sys.executable).parent.parent), "HYBRIDREC_ES_URL": "http://127.0.0.1:9298",
            "HYBRIDREC_INDEX_PREFIX": f"{PREFIX}-s"}


def _get(url: str, request_id: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"X-Request-ID": request_id}), timeout=30):
            return 200
    except urllib.error.HTTPError as exc:
        return exc.code


def _log_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # gunicorn's own lines are plain text
    return lines


def test_api_logs_reach_a_file_and_each_stack_has_its_own_control_socket(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    try:
        for state, port in ((first, 8093), (second, 8094)):
            started = stack_script(_env(state, port), "start", "api")
            assert started.returncode == 0, started.stderr
        for state in (first, second):
            assert (state / "run" / "gunicorn.ctl").is_socket()  # the second start left the first one's alone

        assert _get("http://127.0.0.1:8093/v1/admin/indices", "probe-request-1") == 503
        log = first / "logs" / "api.log"
        deadline = time.time() + 10
        while time.time() < deadline:
            entries = _log_lines(log)
            if any(e.get("request_id") == "probe-request-1" and e["logger"] == "api.errors" for e in entries):
                break
            time.sleep(0.2)
        mine = [e for e in entries if e.get("request_id") == "probe-request-1" and e["logger"] == "api.errors"]
        assert mine and mine[0]["level"] == "WARNING" and mine[0]["message"].startswith("backend unavailable"), \
            log.read_text()[-2000:]
        assert any("HYBRIDREC_API_KEYS is not set" in e.get("message", "") for e in entries)  # start-up lines too

        # The encoder was loaded as the worker started, before any request: the first `q` finds it loaded
        # (no second load line appears once it has been answered).
        def loads() -> list[dict]:
            return [e for e in _log_lines(log) if e["message"].startswith(("encoder ", "query encoder "))]
        assert [e for e in loads() if "loaded at start-up" in e["message"]], log.read_text()[-2000:]
        before = len(loads())
        assert _get("http://127.0.0.1:8093/v1/search?q=rocket+to+mars", "first-q") == 200  # degraded: no ES
        time.sleep(0.5)  # let the request's log lines reach the file
        assert len(loads()) == before, loads()

        # Requests gunicorn refuses itself answer in the API's error shape, not gunicorn's HTML page.
        for url, headers, status in (("http://127.0.0.1:8093/v1/search?q=" + "x" * 5000, {}, 414),
                                     ("http://127.0.0.1:8093/health", {"X-Big": "y" * 9000}, 431)):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)
            assert refused.value.code == status
            assert refused.value.headers["Content-Type"] == "application/problem+json"
            assert json.loads(refused.value.read())["status"] == status
    finally:
        for state, port in ((first, 8093), (second, 8094)):
            stack_script(_env(state, port), "stop", "api")
