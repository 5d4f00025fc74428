#!/usr/bin/env bash
# Fuzz the API with schemathesis from its own OpenAPI document: thousands of generated requests against the
# real app on the embedded node and Redis (loopback only, bounded by the example count). 0 server errors expected.
#   bash scripts/fuzz.sh [examples per operation, default 500]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
bash scripts/stack.sh start es redis
HYBRIDREC_FUZZ_EXAMPLES="${1:-500}" exec "$VENV/bin/python" -m pytest -q -s -p no:cacheprovider \
  tests/integration/test_fuzz.py
