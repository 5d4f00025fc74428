"""The suite's own Celery workers never outlive the run that started them, however it ends: SIGTERM (a CI
timeout) through the conftest handler and atexit, SIGKILL through the kernel (PR_SET_PDEATHSIG)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.integration

LEAKY_TEST = '''
import time
from pathlib import Path

from tests.helpers import WorkerProcess


def test_sleeps_with_a_worker(tmp_path):
    worker = WorkerProcess(tmp_path / "worker.log", name="leak")
    worker.start()
    Path({pidfile!r}).write_text(str(worker.proc.pid))
    time.sleep(600)
'''


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    children = [int(p) for p in out.stdout.split()]
    return [pid] + [grandchild for child in children for grandchild in _tree(child)]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_run_leaves_no_worker(tmp_path, signum):
    pidfile = tmp_path / "worker.pid"
    test_file = tmp_path / "test_leaky.py"
    test_file.write_text(LEAKY_TEST.format(pidfile=str(pidfile)))
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                            "--rootdir", str(tmp_path), str(test_file)], cwd=REPO, env=os.environ.copy(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not pidfile.exists():
            assert run.poll() is None, "the inner run ended before its worker answered"
            time.sleep(0.5)
        tree = _tree(int(pidfile.read_text()))
        assert len(tree) >= 2, tree  # the worker and its pool process
        run.send_signal(signum)
        run.wait(timeout=60)
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in tree):
            time.sleep(0.5)
        assert [p for p in tree if _alive(p)] == [], f"workers left after {signal.Signals(signum).name}"
    finally:
        if run.poll() is None:
            run.kill()
        for pid in tree:  # only processes this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
