#!/usr/bin/env bash
# start | stop | status for the local stack: embedded Elasticsearch, Redis, the Celery workers, the API (gunicorn).
#   stack.sh start [services...]   services: es redis worker api cluster es-node-K (default: es redis)
#   stack.sh stop  [services...]   (default: everything this script started, the cluster included)
# cluster: HYBRIDREC_ES_NODES (3) nodes on HTTP ports from HYBRIDREC_ES_CLUSTER_PORT (9201) and transport
# ports from HYBRIDREC_ES_CLUSTER_TRANSPORT_PORT (9301), heap HYBRIDREC_ES_CLUSTER_HEAP (512m) each, one
# cluster; es-node-K is node K alone (start waits until it has joined; stop is a clean SIGTERM).
#   stack.sh status
# Idempotent: start never starts a second copy; stop on a stopped service is a no-op.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mkdir -p "$STATE_DIR/logs" "$STATE_DIR/run"
RUN="$STATE_DIR/run"

launch_node() {  # launch_node HOME HTTP_PORT TRANSPORT_PORT HEAP CONSOLE_LOG PIDFILE [launcher args...]
  local home="$1" port="$2" transport="$3" heap="$4" console="$5" pidfile="$6"; shift 6
  local java_home; java_home="$(find_java_home)"
  mkdir -p "$home/tmp"
  # setsid: the node outlives this shell and gets SIGTERM alone on stop.
  setsid "$java_home/bin/java" -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC \
    --enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector \
    -Dlog4j2.disable.jmx=true -Djava.io.tmpdir="$home/tmp" \
    -cp "$ES_JAR:$ES_PROJECT/target/lib/*" io.hybridrec.devtools.EmbeddedElasticsearch \
    --home "$home" --port "$port" --transport-port "$transport" "$@" ${HYBRIDREC_ES_EXTRA_ARGS:-} \
    >"$console" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

start_es() {
  if pid_alive "$RUN/es.pid"; then log "elasticsearch already running (pid $(cat "$RUN/es.pid"))"; return; fi
  if es_answers; then log "an Elasticsearch already answers on 127.0.0.1:$ES_PORT: using it"; return; fi
  [[ -f "$ES_JAR" ]] || die "embedded node not built: run scripts/setup.sh first"
  log "starting embedded Elasticsearch on 127.0.0.1:$ES_PORT (heap $ES_HEAP)"
  launch_node "$STATE_DIR/es" "$ES_PORT" "$ES_TRANSPORT_PORT" "$ES_HEAP" "$STATE_DIR/logs/es-console.log" "$RUN/es.pid"
  if ! wait_for "elasticsearch" 180 es_answers; then
    tail -30 "$STATE_DIR/logs/es-console.log" "$STATE_DIR"/es/logs/*.log 2>/dev/null >&2 || true
    die "Elasticsearch did not answer on 127.0.0.1:$ES_PORT within 180 s (logs: $STATE_DIR/logs, $STATE_DIR/es/logs)"
  fi
}

# The cluster: ES_NODES master-eligible data nodes named hybridrec-node-K, each with its own home (data,
# logs) under $STATE_DIR/es-cluster/node-K, all seeded with every node's transport address.
cluster_node_args() {  # cluster_node_args K: the launcher arguments of node K
  local k="$1" seeds="" masters="" i
  for i in $(seq 1 "$ES_NODES"); do
    seeds+="${seeds:+,}127.0.0.1:$((ES_CLUSTER_TRANSPORT_PORT + i - 1))"
    masters+="${masters:+,}hybridrec-node-$i"
  done
  echo --cluster-name hybridrec-cluster --node-name "hybridrec-node-$k" --seed-hosts "$seeds"
  # Bootstrapping is for a cluster that never formed: a node that has joined one keeps its state in
  # data/_state and must not be told to bootstrap again.
  [[ -d "$STATE_DIR/es-cluster/node-$k/data/_state" ]] || echo --initial-master-nodes "$masters"
}

start_es_node() {  # start_es_node K (idempotent)
  local k="$1" port=$((ES_CLUSTER_PORT + $1 - 1)) transport=$((ES_CLUSTER_TRANSPORT_PORT + $1 - 1))
  (( k >= 1 && k <= ES_NODES )) || die "no cluster node $k (HYBRIDREC_ES_NODES=$ES_NODES)"
  if pid_alive "$RUN/es-node-$k.pid"; then log "cluster node $k already running (pid $(cat "$RUN/es-node-$k.pid"))"; return; fi
  if es_answers "$port"; then die "something else answers on 127.0.0.1:$port: choose HYBRIDREC_ES_CLUSTER_PORT"; fi
  [[ -f "$ES_JAR" ]] || die "embedded node not built: run scripts/setup.sh first"
  log "starting cluster node $k on 127.0.0.1:$port (transport $transport, heap $ES_CLUSTER_HEAP)"
  # shellcheck disable=SC2046  # the node arguments are words without spaces
  launch_node "$STATE_DIR/es-cluster/node-$k" "$port" "$transport" "$ES_CLUSTER_HEAP" \
    "$STATE_DIR/logs/es-node-$k-console.log" "$RUN/es-node-$k.pid" $(cluster_node_args "$k")
}

cluster_formed() {  # every node answers and the cluster counts all of them
  local k
  for k in $(seq 1 "$ES_NODES"); do es_answers $((ES_CLUSTER_PORT + k - 1)) || return 1; done
  curl -fsS -m 5 "http://127.0.0.1:$ES_CLUSTER_PORT/_cluster/health?wait_for_nodes=$ES_NODES&timeout=4s" >/dev/null 2>&1
}

wait_cluster() {
  if ! wait_for "cluster of $ES_NODES nodes" 240 cluster_formed; then
    tail -20 "$STATE_DIR"/logs/es-node-*-console.log "$STATE_DIR"/es-cluster/node-*/logs/*.log 2>/dev/null >&2 || true
    die "the cluster did not form within 240 s (logs: $STATE_DIR/logs, $STATE_DIR/es-cluster/node-*/logs)"
  fi
}

start_cluster() {
  local k
  for k in $(seq 1 "$ES_NODES"); do start_es_node "$k"; done
  wait_cluster
}

stop_cluster() {
  local k
  for k in $(seq "$ES_NODES" -1 1); do stop_pidfile "cluster node $k" "$RUN/es-node-$k.pid"; done
}

start_redis() {
  if redis_answers; then log "redis already answers on 127.0.0.1:$REDIS_PORT"; return; fi
  command -v redis-server >/dev/null || die "redis-server is missing: apt-get install redis-server"
  log "starting redis on 127.0.0.1:$REDIS_PORT (append-only file in $STATE_DIR/redis, fsync every second)"
  mkdir -p "$STATE_DIR/redis"
  # Redis is the broker: an accepted event waits there until a worker writes it. The append-only file,
  # fsynced every second, keeps it through a crash or a kill -9 (at most the last second is at risk);
  # noeviction: a full Redis refuses new writes rather than evicting queued tasks.
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save "" \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
    --dir "$STATE_DIR/redis" --pidfile "$RUN/redis.pid" --logfile "$STATE_DIR/logs/redis.log"
  wait_for "redis" 30 redis_answers || die "redis did not answer on 127.0.0.1:$REDIS_PORT (log: $STATE_DIR/logs/redis.log)"
}

# Celery workers, one per kind of work, so a reindex or a training never delays live events:
#   events  -Q events       (event writes, click attribution, deferred profiles, reco-log flush; beat runs here)
#   embed   -Q embed,index  (item indexing, reindex, deletes, rollback: the encoder loads here)
#   train   -Q train        (training, promotion, model rollback)
# HYBRIDREC_WORKER_LAYOUT=combined runs the single worker of old for all four queues (a small machine, a test).
# Each has its pidfile run/worker-NAME.pid, log logs/worker-NAME.log, prometheus folder and metrics port
# (HYBRIDREC_WORKER_METRICS_PORT for events, +1 embed, +2 train; combined: the port itself).
WORKER_NAMES=(events embed train combined)
worker_layout() {
  case "${HYBRIDREC_WORKER_LAYOUT:-split}" in
    split) echo "events embed train" ;;
    combined) echo "combined" ;;
    *) die "HYBRIDREC_WORKER_LAYOUT must be split or combined, not ${HYBRIDREC_WORKER_LAYOUT}" ;;
  esac
}

start_one_worker() {  # start_one_worker NAME
  local name="$1" queues concurrency offset beat=()
  case "$name" in
    events) queues=events; concurrency="${HYBRIDREC_EVENTS_WORKER_CONCURRENCY:-2}"; offset=0
            beat=(--beat --schedule "$RUN/celerybeat-schedule") ;;
    embed) queues=embed,index; concurrency="${HYBRIDREC_WORKER_CONCURRENCY:-1}"; offset=1 ;;
    train) queues=train; concurrency=1; offset=2 ;;
    combined) queues=embed,index,events,train; concurrency="${HYBRIDREC_WORKER_CONCURRENCY:-1}"; offset=0
              beat=(--beat --schedule "$RUN/celerybeat-schedule") ;;
  esac
  local pidfile="$RUN/worker-$name.pid" port=$(( ${HYBRIDREC_WORKER_METRICS_PORT:-9808} + offset ))
  if pid_alive "$pidfile"; then log "celery worker $name already running"; return; fi
  log "starting Celery worker $name (queues: $queues; concurrency $concurrency${beat:+; beat embedded}; metrics on 127.0.0.1:$port)"
  local multiproc="$STATE_DIR/prometheus-worker-$name"
  rm -rf "$multiproc"; mkdir -p "$multiproc"
  PROMETHEUS_MULTIPROC_DIR="$multiproc" HYBRIDREC_WORKER_METRICS_PORT="$port" \
    "$VENV/bin/celery" -A workers.celery_app worker --loglevel=INFO --concurrency="$concurrency" \
    -Q "$queues" --hostname "hybridrec-$name@%h" --pidfile "$pidfile" "${beat[@]}" \
    --logfile "$STATE_DIR/logs/worker-$name.log" --detach
  wait_for "celery worker $name" 60 pid_alive "$pidfile" || die "worker $name did not start (log: $STATE_DIR/logs/worker-$name.log)"
}

start_worker() {
  local name
  for name in $(worker_layout); do start_one_worker "$name"; done
}

stop_worker() {  # every worker this state folder holds a pidfile for, whichever layout started it
  local name
  # run/worker.pid: the single worker a stack.sh before the split started (a stack still running across the update).
  local found=0
  if [[ -f "$RUN/worker.pid" ]]; then stop_pidfile "celery worker" "$RUN/worker.pid"; found=1; fi
  for name in "${WORKER_NAMES[@]}"; do
    if [[ -f "$RUN/worker-$name.pid" ]]; then stop_pidfile "celery worker $name" "$RUN/worker-$name.pid"; found=1; fi
  done
  (( found )) || log "celery workers not running"
}

start_api() {
  if pid_alive "$RUN/api.pid"; then log "API already running"; return; fi
  log "starting the API with gunicorn on 127.0.0.1:$API_PORT"
  # Metrics from every gunicorn worker process are aggregated through this folder (emptied per start).
  export PROMETHEUS_MULTIPROC_DIR="$STATE_DIR/prometheus"
  rm -rf "$PROMETHEUS_MULTIPROC_DIR"; mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  # --daemon points stdout and stderr at /dev/null: --capture-output sends them, and with them the app's JSON
  # log lines (request ids, "backend unavailable", "unhandled error"), to api.log beside gunicorn's own.
  # The control socket lives in the state folder: the default (~/.gunicorn/gunicorn.ctl) is one per user,
  # and a second stack starting would remove the first one's (releases before the socket have no option).
  local control=()
  if [[ "$("$VENV/bin/gunicorn" --help 2>/dev/null)" == *--control-socket* ]]; then control=(--control-socket "$RUN/gunicorn.ctl"); fi
  "$VENV/bin/gunicorn" --bind "127.0.0.1:$API_PORT" --workers "${HYBRIDREC_API_WORKERS:-2}" --threads 4 \
    --timeout 30 --pid "$RUN/api.pid" --config "$REPO_ROOT/scripts/gunicorn_conf.py" --access-logfile "$STATE_DIR/logs/api-access.log" \
    --error-logfile "$STATE_DIR/logs/api.log" --capture-output "${control[@]}" \
    --daemon "api:create_app()"
  wait_for "api" 90 api_answers || die "API did not answer on 127.0.0.1:$API_PORT (log: $STATE_DIR/logs/api.log)"
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
  local name="$1" pidfile="$2" pid
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; log "$name not running"; return; fi
  pid="$(cat "$pidfile")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then log "$name ignored SIGTERM for 60 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
}

status() {
  local s
  pid_alive "$RUN/es.pid" && s="running (pid $(cat "$RUN/es.pid"))" || s="not started here"
  es_answers && s="$s, answers on :$ES_PORT" || s="$s, no answer on :$ES_PORT"
  echo "elasticsearch: $s"
  redis_answers && echo "redis: answers on :$REDIS_PORT" || echo "redis: no answer on :$REDIS_PORT"
  for k in $(seq 1 "$ES_NODES"); do
    pid_alive "$RUN/es-node-$k.pid" && echo "cluster node $k: running (pid $(cat "$RUN/es-node-$k.pid")) on :$((ES_CLUSTER_PORT + k - 1))"
  done
  local name
  for name in $(worker_layout); do
    pid_alive "$RUN/worker-$name.pid" && echo "worker $name: running (pid $(cat "$RUN/worker-$name.pid"))" \
      || echo "worker $name: not running"
  done
  pid_alive "$RUN/api.pid" && echo "api: running (pid $(cat "$RUN/api.pid")) on :$API_PORT" || echo "api: not running"
}

cmd="${1:-status}"; shift || true
case "$cmd" in
  start)
    services=("$@"); [[ ${#services[@]} -gt 0 ]] || services=(es redis)
    for s in "${services[@]}"; do
      case "$s" in
        es) start_es ;; redis) start_redis ;; worker) start_worker ;; api) start_api ;; cluster) start_cluster ;;
        es-node-*) start_es_node "${s#es-node-}"; wait_cluster ;;
        *) die "unknown service $s" ;;
      esac
    done ;;
  stop)
    services=("$@"); [[ ${#services[@]} -gt 0 ]] || services=(api worker es cluster redis)
    for s in "${services[@]}"; do
      case "$s" in
        es) stop_pidfile elasticsearch "$RUN/es.pid" ;;
        redis) stop_pidfile redis "$RUN/redis.pid" ;;
        worker) stop_worker ;;
        api) stop_pidfile api "$RUN/api.pid" ;;
        cluster) stop_cluster ;;
        es-node-*) stop_pidfile "cluster node ${s#es-node-}" "$RUN/es-node-${s#es-node-}.pid" ;;
        *) die "unknown service $s" ;;
      esac
    done ;;
  status) status ;;
  *) die "usage: stack.sh start|stop|status [es redis worker api cluster es-node-K]" ;;
esac
