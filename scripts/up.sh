#!/usr/bin/env bash
# One command from nothing to a running stack: install, start Elasticsearch + Redis + the Celery workers +
# the API (gunicorn), load the MovieLens-100K demo catalog, print where to send requests.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
bash scripts/setup.sh
bash scripts/stack.sh start es redis
"$VENV/bin/hybridrec" init >/dev/null
bash scripts/stack.sh start worker api
log "loading the demo catalog (MovieLens-100K movies from the recbole wheel) through the embed worker"
"$VENV/bin/hybridrec" demo
cat <<MSG

hybridrec is up:
  API            http://127.0.0.1:$API_PORT   (health: /ready, metrics: /metrics)
  Elasticsearch  http://127.0.0.1:$ES_PORT
  Redis          127.0.0.1:$REDIS_PORT
Try:
  curl -s 'http://127.0.0.1:$API_PORT/v1/users/alice/recommendations?k=5'
  curl -s -XPOST http://127.0.0.1:$API_PORT/v1/events -H 'Content-Type: application/json' \\
       -d '{"user_id": "alice", "item_id": "1", "type": "like"}'
  curl -s 'http://127.0.0.1:$API_PORT/v1/users/alice/recommendations?k=5&explain=true'
Stop everything with: bash scripts/stack.sh stop
MSG
