#!/usr/bin/env bash
# The lint and type gate (configured in pyproject.toml): ruff, then mypy strict on indexer/, api/, workers/.
# Fails on the first finding; .ci/run runs it before the tests.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
bash scripts/setup.sh
"$VENV/bin/ruff" check .
"$VENV/bin/mypy"
