"""The workers as scripts/stack.sh runs them (detached; events, embed+index and train apart, beat embedded in
the events worker only), on a private Redis and state folder: a kill -9 of a worker's main process leaves no
beat and no pool process behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from tests.helpers import PREFIX, run_stack, stack_script

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


def test_separate_workers_and_a_kill_9_leaves_no_beat_running(tmp_path):
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
        deadline = time.time() + 90
        mains = {name: _settled_pid(state / "run" / f"worker-{name}.pid", deadline)
                 for name in ("events", "embed", "train")}
        assert len(set(mains.values())) == 3, mains
        log = state / "logs" / "worker-events.log"
        while time.time() < deadline and not (log.exists() and "beat: Starting" in log.read_text()):
            time.sleep(0.5)
        assert "beat: Starting" in log.read_text(), log.read_text()[-2000:]
        for name, queues in (("events", "events"), ("embed", "embed,index"), ("train", "train")):
            argv = Path(f"/proc/{mains[name]}/cmdline").read_text().split("\0")
            assert argv[argv.index("-Q") + 1] == queues, argv
            text = (state / "logs" / f"worker-{name}.log").read_text()
            assert ("beat: Starting" in text) == (name == "events"), f"beat in worker {name}? {text[-2000:]}"
        status = stack_script(env, "status").stdout
        assert all(f"worker {name}: running (pid {pid})" in status for name, pid in mains.items()), status
        main = mains["events"]
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
