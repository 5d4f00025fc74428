# Shared helpers for the hybridrec scripts (sourced, not run).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${HYBRIDREC_STATE_DIR:-$REPO_ROOT/.hybridrec}"
VENV="${HYBRIDREC_VENV:-$REPO_ROOT/.venv}"
ES_PORT="${HYBRIDREC_ES_PORT:-9200}"
ES_TRANSPORT_PORT="${HYBRIDREC_ES_TRANSPORT_PORT:-9300}"
ES_HEAP="${HYBRIDREC_ES_HEAP:-1g}"
REDIS_PORT="${HYBRIDREC_REDIS_PORT:-6379}"
API_PORT="${HYBRIDREC_API_PORT:-8000}"
# A local multi-node cluster (stack.sh start cluster): node K (1..N) serves HTTP on ES_CLUSTER_PORT+K-1 and
# transport on ES_CLUSTER_TRANSPORT_PORT+K-1.
ES_NODES="${HYBRIDREC_ES_NODES:-3}"
ES_CLUSTER_PORT="${HYBRIDREC_ES_CLUSTER_PORT:-9201}"
ES_CLUSTER_TRANSPORT_PORT="${HYBRIDREC_ES_CLUSTER_TRANSPORT_PORT:-9301}"
ES_CLUSTER_HEAP="${HYBRIDREC_ES_CLUSTER_HEAP:-512m}"
ES_PROJECT="$REPO_ROOT/devtools/elasticsearch"
ES_JAR="$ES_PROJECT/target/embedded-elasticsearch-1.0.0.jar"

log() { printf '[hybridrec] %s\n' "$*" >&2; }
die() { printf '[hybridrec] error: %s\n' "$*" >&2; exit 1; }

# Elasticsearch 9 needs Java 21+: take HYBRIDREC_JAVA_HOME, else the newest JDK >= 21 we can find.
find_java_home() {
  if [[ -n "${HYBRIDREC_JAVA_HOME:-}" ]]; then
    [[ -x "$HYBRIDREC_JAVA_HOME/bin/java" ]] || die "HYBRIDREC_JAVA_HOME=$HYBRIDREC_JAVA_HOME has no bin/java"
    echo "$HYBRIDREC_JAVA_HOME"; return
  fi
  local best="" best_ver=0 candidate ver
  for candidate in /usr/lib/jvm/* /opt/java/* "${JAVA_HOME:-}"; do
    [[ -n "$candidate" && -x "$candidate/bin/java" ]] || continue
    ver="$("$candidate/bin/java" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')"
    ver="${ver%%.*}"
    if [[ "$ver" =~ ^[0-9]+$ ]] && (( ver >= 21 && ver > best_ver )); then best="$candidate"; best_ver="$ver"; fi
  done
  [[ -n "$best" ]] || die "no Java 21+ found (Elasticsearch 9 needs it): install a JDK 21+ or set HYBRIDREC_JAVA_HOME"
  echo "$best"
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

es_answers() { curl -fsS -m 2 "http://127.0.0.1:${1:-$ES_PORT}/" >/dev/null 2>&1; }
redis_answers() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]; }
api_answers() { curl -fsS -m 2 "http://127.0.0.1:$API_PORT/health" >/dev/null 2>&1; }

wait_for() {  # wait_for DESCRIPTION SECONDS COMMAND...
  local what="$1" limit="$2"; shift 2
  local start=$SECONDS
  until "$@"; do
    (( SECONDS - start < limit )) || return 1
    sleep 1
  done
  log "$what is up ($((SECONDS - start)) s)"
}

# The model ships inside a package: never reach for a hub at run time.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HYBRIDREC_API_PORT="$API_PORT"
