"""A real 3-node cluster (scripts/stack.sh start cluster) under load from a real gunicorn API and a real
Celery worker: a node killed with SIGKILL, a rolling restart of every node and a reindex with its alias
swap. Readers never see a 5xx; every acknowledged event and item is found once the cluster is green.

Run alone, with its own marker: `bash scripts/test.sh -m es_cluster tests/integration/test_es_cluster.py`.
HYBRIDREC_TEST_CLUSTER_ROLLING_NODES=1 (CI's reduced form) restarts only the elected master in the rolling
restart, not all three nodes.
The figures of each scenario are printed (pytest -s shows them) and written to the file named by
HYBRIDREC_TEST_CLUSTER_REPORT, if set.
"""
from __future__ import annotations

import atexit
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import urllib3

from indexer import lifecycle
from indexer.settings import load_settings
from tests.helpers import PREFIX, REPO, WORKER_METRICS_PORT, WorkerProcess, run_stack, stack_script

pytestmark = [pytest.mark.integration, pytest.mark.es_cluster]

NODES = 3
HTTP_BASE = int(os.environ.get("HYBRIDREC_TEST_CLUSTER_PORT", "9251"))
TRANSPORT_BASE = int(os.environ.get("HYBRIDREC_TEST_CLUSTER_TRANSPORT_PORT", "9351"))
API_PORT = int(os.environ.get("HYBRIDREC_TEST_CLUSTER_API_PORT", "9259"))
URLS = ",".join(f"http://127.0.0.1:{HTTP_BASE + k}" for k in range(NODES))
# What the worker and the API read: every node, and indices of 3 shards with 1 replica each.
CLUSTER_ENV = {"HYBRIDREC_ES_URL": URLS, "HYBRIDREC_ES_SHARDS": "3", "HYBRIDREC_ES_REPLICAS": "1"}
CATEGORIES = ("space", "cooking", "garden", "football")
CATALOG = 40
USERS = 12
# How many nodes the rolling restart restarts, the elected master first (CI: 1).
ROLLING_NODES = int(os.environ.get("HYBRIDREC_TEST_CLUSTER_ROLLING_NODES", str(NODES)))
REPORT: dict[str, Any] = {}


class Cluster:
    """The nodes stack.sh starts in a private state folder; stopped at the end, killed on any other exit."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.env = {"HYBRIDREC_STATE_DIR": str(state), "HYBRIDREC_ES_NODES": str(NODES),
                    "HYBRIDREC_ES_CLUSTER_PORT": str(HTTP_BASE),
                    "HYBRIDREC_ES_CLUSTER_TRANSPORT_PORT": str(TRANSPORT_BASE)}

    def pid(self, k: int) -> int | None:
        path = self.state / "run" / f"es-node-{k}.pid"
        return int(path.read_text()) if path.exists() else None

    def start(self, k: int | None = None) -> None:
        run_stack(self.env, "start", "cluster" if k is None else f"es-node-{k}")

    def stop(self, k: int | None = None) -> None:
        run_stack(self.env, "stop", "cluster" if k is None else f"es-node-{k}")

    def kill9(self, k: int) -> None:
        pid = self.pid(k)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid):
            time.sleep(0.05)

    def kill_all(self) -> None:
        for k in range(1, NODES + 1):
            pid = self.pid(k)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# Run beside the test process: once that process is gone (however it died, SIGKILL included, when no
# handler of its own runs), SIGKILL every node whose pid file the cluster's run folder holds.
WATCHDOG = """
import os, pathlib, signal, sys, time
parent, run = int(sys.argv[1]), pathlib.Path(sys.argv[2])
while os.getppid() == parent:
    time.sleep(1)
for pidfile in run.glob("es-node-*.pid"):
    try:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
    except (ProcessLookupError, ValueError, OSError):
        pass
"""


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (FileNotFoundError, IndexError):
        return "zombie"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = Cluster(tmp_path_factory.mktemp("cluster"))
    atexit.register(nodes.kill_all)  # an interrupted run (SIGTERM and SIGHUP end in atexit) leaves no node
    watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), str(nodes.state / "run")],
                                start_new_session=True)
    try:
        nodes.start()
        yield nodes
    finally:
        try:
            nodes.stop()
        finally:
            nodes.kill_all()
            atexit.unregister(nodes.kill_all)
            watchdog.kill()
            watchdog.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster_settings():
    return load_settings(es_url=URLS, es_shards=3, es_replicas=1, index_prefix=PREFIX)


@pytest.fixture(scope="module")
def cluster_es(cluster, cluster_settings):
    from indexer.clients import make_es

    return make_es(cluster_settings, timeout=30)


@pytest.fixture(scope="module")
def cluster_stack(cluster, cluster_es, cluster_settings, redis_client, tmp_path_factory):
    """A real worker and a real gunicorn API, both on every node of the cluster."""
    from bench.load import start_api

    folder = tmp_path_factory.mktemp("cluster-stack")
    (folder / "prometheus").mkdir()
    lifecycle.ensure_indices(cluster_es, cluster_settings)
    worker = WorkerProcess(folder / "worker.log", name="cluster",
                           env={**CLUSTER_ENV, "HYBRIDREC_WORKER_METRICS_PORT": str(WORKER_METRICS_PORT),
                                "PROMETHEUS_MULTIPROC_DIR": str(folder / "prometheus")})
    worker.start()
    api = start_api(REPO, API_PORT, 1, folder / "api.log", env=CLUSTER_ENV)
    try:
        assert api.poll() is None, f"the API did not start, see {folder / 'api.log'}"
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=20), retries=False)
        base = f"http://127.0.0.1:{API_PORT}"
        items = [_item(f"seed{i}") for i in range(CATALOG)]
        assert http.request("POST", f"{base}/v1/items/bulk", json={"items": items}).status == 202
        _wait_found(cluster_es, cluster_settings, "items", {i["id"] for i in items}, 180)
        events = [{"user_id": f"u{n}", "item_id": f"seed{(n * 3 + j) % CATALOG}", "type": "view",
                   "event_id": f"seed-{n}-{j}"} for n in range(USERS) for j in range(3)]
        assert http.request("POST", f"{base}/v1/events", json={"events": events}).status == 202
        _wait_found(cluster_es, cluster_settings, "events", {e["event_id"] for e in events}, 120)
        yield base
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=30)
        worker.stop()


def _item(item_id: str) -> dict[str, Any]:
    category = CATEGORIES[sum(map(ord, item_id)) % len(CATEGORIES)]
    return {"id": item_id, "title": f"{category} story {item_id}", "description": f"all about {category}",
            "category": category, "tags": [category]}


def _found(es, settings, kind: str, ids: set[str]) -> set[str]:
    alias = lifecycle.alias_name(settings, kind)
    es.indices.refresh(index=alias)
    found: set[str] = set()
    ordered = sorted(ids)
    for start in range(0, len(ordered), 1000):
        chunk = ordered[start:start + 1000]
        hits = es.search(index=alias, query={"ids": {"values": chunk}}, size=len(chunk), source=False)
        found.update(hit["_id"] for hit in hits["hits"]["hits"])
    return found


def _wait_found(es, settings, kind: str, ids: set[str], seconds: float) -> set[str]:
    """The ids of `kind` found within `seconds` (the worker may still be draining its queue)."""
    deadline = time.monotonic() + seconds
    found = _found(es, settings, kind, ids)
    while found != ids and time.monotonic() < deadline:
        time.sleep(1)
        found = _found(es, settings, kind, ids)
    return found


def _wait_green(es) -> float:
    started = time.monotonic()
    health = es.options(request_timeout=190).cluster.health(wait_for_status="green", wait_for_nodes=str(NODES),
                                                             timeout="180s")
    assert health["status"] == "green", health
    return time.monotonic() - started


class Load:
    """Two readers (recommendations, search, similar items) and a writer of events and items on the real
    API, until stopped. Every answer's status is counted; an acknowledged (202) event or item is kept."""

    def __init__(self, base: str, tag: str, write: bool = True) -> None:
        self.base, self.tag, self.write = base, tag, write
        self.http = urllib3.PoolManager(maxsize=4, timeout=urllib3.Timeout(connect=2, read=20), retries=False)
        self.reads: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()
        self.degraded = 0
        self.events: set[str] = set()
        self.items: set[str] = set()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._read, args=(seed,), daemon=True) for seed in (1, 2)]
        if write:
            self.threads.append(threading.Thread(target=self._write, daemon=True))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _call(self, method: str, path: str, body: Any = None) -> tuple[str, Any]:
        try:
            answer = self.http.request(method, self.base + path, json=body)
        except urllib3.exceptions.HTTPError as exc:
            return f"error:{type(exc).__name__}", None
        try:
            return str(answer.status), answer.json()
        except ValueError:
            return str(answer.status), None

    def _read(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stopping.is_set():
            choice = rng.random()
            if choice < 0.6:
                path = f"/v1/users/u{rng.randrange(USERS)}/recommendations?k=10"
            elif choice < 0.8:
                path = f"/v1/search?q={rng.choice(CATEGORIES)}&k=10"
            else:
                path = f"/v1/items/seed{rng.randrange(CATALOG)}/similar?k=5"
            status, body = self._call("GET", path)
            with self.lock:
                self.reads[status] += 1
                self.degraded += bool(isinstance(body, dict) and body.get("degraded"))
            time.sleep(0.02)

    def _write(self) -> None:
        batch = 0
        while not self.stopping.is_set():
            batch += 1
            events = [{"user_id": f"u{(batch + j) % USERS}", "item_id": f"seed{(batch * 7 + j) % CATALOG}",
                       "type": "click", "event_id": f"{self.tag}-e{batch}-{j}"} for j in range(5)]
            status, _ = self._call("POST", "/v1/events", {"events": events})
            with self.lock:
                self.writes[f"events:{status}"] += 1
                if status == "202":
                    self.events.update(e["event_id"] for e in events)
            if batch % 5 == 0:
                item = _item(f"{self.tag}-i{batch}")
                status, _ = self._call("PUT", f"/v1/items/{item['id']}", item)
                with self.lock:
                    self.writes[f"items:{status}"] += 1
                    if status == "202":
                        self.items.add(item["id"])
            time.sleep(0.1)

    def reads_now(self) -> Counter[str]:
        with self.lock:
            return Counter(self.reads)

    def figures(self) -> dict[str, Any]:
        return {"reads": sum(self.reads.values()), "read_statuses": dict(self.reads), "degraded": self.degraded,
                "writes": dict(self.writes), "events_acknowledged": len(self.events),
                "items_acknowledged": len(self.items)}

    def assert_no_failed_read(self) -> None:
        failed = {status: n for status, n in self.reads.items() if not status.startswith(("2", "4"))}
        assert not failed, f"failed reads: {failed} of {self.figures()}"
        assert self.reads.get("200", 0) > 0
        # Not even degraded: a request to a dead node moves on to a live one, whose shard copies answer.
        assert self.degraded == 0, f"degraded reads: {self.figures()}"


def _settle(load: Load, es, settings, name: str, figures: dict[str, Any]) -> None:
    """After green: every acknowledged event and item is found; record and check the figures."""
    events = _wait_found(es, settings, "events", load.events, 180)
    items = _wait_found(es, settings, "items", load.items, 180)
    figures.update(load.figures(), events_found=len(events), items_found=len(items))
    REPORT[name] = figures
    print(f"\ncluster {name}: {json.dumps(figures, sort_keys=True)}")
    if os.environ.get("HYBRIDREC_TEST_CLUSTER_REPORT"):
        Path(os.environ["HYBRIDREC_TEST_CLUSTER_REPORT"]).write_text(json.dumps(REPORT, indent=2, sort_keys=True))
    load.assert_no_failed_read()
    assert load.events and events == load.events, f"acknowledged events missing: {sorted(load.events - events)[:10]}"
    assert load.items and items == load.items, f"acknowledged items missing: {sorted(load.items - items)[:10]}"


def test_starting_the_cluster_again_starts_nothing(cluster):
    pids = [cluster.pid(k) for k in range(1, NODES + 1)]
    again = stack_script(cluster.env, "start", "cluster")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already running") == NODES
    assert [cluster.pid(k) for k in range(1, NODES + 1)] == pids


def test_indices_have_three_shards_and_a_replica_each(cluster_stack, cluster_es, cluster_settings):
    for kind in ("items", "events", "reco_logs"):
        index = lifecycle.current_index(cluster_es, cluster_settings, kind)
        assert index is not None
        body = cluster_es.indices.get_settings(index=index)[index]["settings"]["index"]
        assert (body["number_of_shards"], body["number_of_replicas"]) == ("3", "1"), (kind, body)
    shards = cluster_es.cat.shards(index=f"{PREFIX}-*", format="json")
    assert {row["node"] for row in shards} == {f"hybridrec-node-{k}" for k in range(1, NODES + 1)}


def _victim(es) -> int:
    """A node that is not the elected master and holds a primary of the events index: losing it costs
    a primary failover, not a master election (the rolling restart covers the master too)."""
    master = es.cat.master(format="json")[0]["node"]
    rows = es.cat.shards(index=f"{PREFIX}-events-*", format="json")
    holders = sorted({row["node"] for row in rows if row["prirep"] == "p" and row["node"] != master})
    return int(holders[0].rsplit("-", 1)[1])


def test_kill9_of_a_data_node_under_load(cluster, cluster_stack, cluster_es, cluster_settings):
    _wait_green(cluster_es)
    victim = _victim(cluster_es)
    with Load(cluster_stack, "kill") as load:
        time.sleep(3)
        before = load.reads_now()
        killed = time.monotonic()
        cluster.kill9(victim)
        time.sleep(8)  # reads and writes meet the cluster one node short
        restarted = time.monotonic()
        cluster.start(victim)
        joined = time.monotonic()
        _wait_green(cluster_es)
        green = time.monotonic()
        during = load.reads_now() - before
        time.sleep(2)
    _settle(load, cluster_es, cluster_settings, "kill9", {
        "node": victim, "seconds_down": round(restarted - killed, 1),
        "seconds_restart_to_joined": round(joined - restarted, 1),
        "seconds_kill_to_green": round(green - killed, 1), "reads_kill_to_green": dict(during)})


def test_rolling_restart_under_load(cluster, cluster_stack, cluster_es, cluster_settings):
    _wait_green(cluster_es)
    master = int(cluster_es.cat.master(format="json")[0]["node"].rsplit("-", 1)[1])
    order = [master, *(k for k in range(1, NODES + 1) if k != master)][:ROLLING_NODES]
    per_node: dict[str, float] = {}
    started = time.monotonic()
    with Load(cluster_stack, "rolling") as load:
        time.sleep(3)
        for k in order:
            # Elasticsearch's rolling-restart procedure: no replica moves while the node is away.
            cluster_es.cluster.put_settings(persistent={"cluster.routing.allocation.enable": "primaries"})
            cluster_es.indices.flush(index=f"{PREFIX}-*")
            down = time.monotonic()
            cluster.stop(k)
            cluster.start(k)
            cluster_es.cluster.put_settings(persistent={"cluster.routing.allocation.enable": None})
            _wait_green(cluster_es)
            per_node[f"node-{k}"] = round(time.monotonic() - down, 1)
        time.sleep(3)
    _settle(load, cluster_es, cluster_settings, "rolling_restart", {
        "restarted_in_order": order, "seconds_stop_to_green_per_node": per_node,
        "seconds_total": round(time.monotonic() - started, 1)})


def test_reindex_with_alias_swap_under_reads(cluster_stack, cluster_es, cluster_settings):
    _wait_green(cluster_es)
    before = lifecycle.current_index(cluster_es, cluster_settings, "items")
    count = cluster_es.count(index=before)["count"]
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=20), retries=False)
    started = time.monotonic()
    with Load(cluster_stack, "reindex", write=False) as load:
        time.sleep(2)
        answer = http.request("POST", f"{cluster_stack}/v1/admin/reindex")
        assert answer.status == 202, answer.data
        task = answer.json()["task_id"]
        state = "PENDING"
        deadline = time.monotonic() + 240
        while state not in ("SUCCESS", "FAILURE") and time.monotonic() < deadline:
            time.sleep(1)
            state = http.request("GET", f"{cluster_stack}/v1/tasks/{task}").json()["state"]
        seconds = time.monotonic() - started
        time.sleep(3)  # reads after the swap, on the new version
    after = lifecycle.current_index(cluster_es, cluster_settings, "items")
    figures = {**load.figures(), "task_state": state, "seconds_reindex": round(seconds, 1),
               "from": before, "to": after, "items": count}
    REPORT["reindex"] = figures
    print(f"\ncluster reindex: {json.dumps(figures, sort_keys=True)}")
    if os.environ.get("HYBRIDREC_TEST_CLUSTER_REPORT"):
        Path(os.environ["HYBRIDREC_TEST_CLUSTER_REPORT"]).write_text(json.dumps(REPORT, indent=2, sort_keys=True))
    assert state == "SUCCESS"
    assert after != before and cluster_es.count(index=after)["count"] == count
    load.assert_no_failed_read()
