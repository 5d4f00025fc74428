#!/usr/bin/env bash
# Run the test suite: install what is missing, start Elasticsearch and Redis if they are not running,
# then pytest (the tests start their own Celery worker and use their own index prefix).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
bash scripts/setup.sh
bash scripts/stack.sh start es redis
exec "$VENV/bin/python" -m pytest "$@"
