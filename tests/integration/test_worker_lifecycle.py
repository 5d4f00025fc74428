"""The worker as scripts/stack.sh runs it (detached, beat embedded), on a private Redis and state folder:
a kill -9 of its main process leaves no beat and no pool process behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from tests.helpers import PREFIX, run_stack

pytestmark = pytest.mark.integration

PORT = "6396"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has already exited


def _settled_pid(pidfile: Path, deadline: float) -> int:
    """The pid in the file once it reads the same, alive, twice a second apart."""
    last = None
    while time.time() < deadline:
        try:
            pid = int(pidfile.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid and pid == last and _alive(pid):
            return pid
        last = pid
        time.sleep(1)
    raise AssertionError(f"{pidfile} never settled on a live worker")


def test_kill_9_of_the_worker_leaves_no_beat_running(tmp_path):
    state = tmp_path / "stack"
    env = {"HYBRIDREC_STATE_DIR": str(state), "HYBRIDREC_REDIS_PORT": PORT,
           "HYBRIDREC_VENV": str(Path(sys.executable).parent.parent), "HYBRIDREC_WORKER_METRICS_PORT": "9897",
           "HYBRIDREC_REDIS_URL": f"redis://127.0.0.1:{PORT}/0", "HYBRIDREC_BROKER_URL": f"redis://127.0.0.1:{PORT}/1",
           "HYBRIDREC_INDEX_PREFIX": f"{PREFIX}-w"}
    stack = partial(run_stack, env)
    left: list[int] = []
    try:
        stack("start", "redis", "worker")
        # Celery's --detach writes the pidfile, then the exec'd worker replaces it (a stale-pidfile check):
        # read it once the worker has settled, not in that window.
        log = state / "logs" / "worker.log"
        deadline = time.time() + 90
        main = _settled_pid(state / "run" / "worker.pid", deadline)
        while time.time() < deadline and not (log.exists() and "beat: Starting" in log.read_text()):
            time.sleep(0.5)
        assert "beat: Starting" in log.read_text(), log.read_text()[-2000:]
        children = _children(main)
        assert len(children) >= 2, children  # the embedded beat and at least one pool process

        os.kill(main, signal.SIGKILL)
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(p) for p in children):
            time.sleep(0.5)
        left = [p for p in children if _alive(p)]
        assert left == [], f"orphans after kill -9 of the worker: {left}"
    finally:
        for pid in left:  # only what this test started
            os.kill(pid, signal.SIGKILL)
        stack("stop", "worker", "redis")
