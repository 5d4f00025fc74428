#!/usr/bin/env bash
# Install what hybridrec needs into a virtualenv and build the embedded Elasticsearch node.
# Idempotent: reuses an existing venv ($HYBRIDREC_VENV, default .venv) and Maven repository.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v python3 >/dev/null || die "python3 is missing"
command -v mvn >/dev/null || die "Maven (mvn) is missing: apt-get install maven"
command -v redis-server >/dev/null || die "redis-server is missing: apt-get install redis-server"
command -v curl >/dev/null || die "curl is missing: apt-get install curl"

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
# Skip pip when setup.cfg has not changed since the last successful install into this venv.
stamp="$VENV/.hybridrec-setup-$(sha1sum "$REPO_ROOT/setup.cfg" | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  log "installing Python packages into $VENV (torch is large: the first run takes a few minutes)"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -e "$REPO_ROOT[test,eval,lint]"
  touch "$stamp"
else
  "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation -e "$REPO_ROOT" >/dev/null 2>&1 \
    || "$VENV/bin/pip" install --quiet -e "$REPO_ROOT[test,eval,lint]"
fi

# The torch-free ONNX encoder (fp32 and int8) from the bundled model's local files; a no-op when an export
# of these very weights is there already.
"$VENV/bin/hybridrec" encoder export >/dev/null || die "hybridrec encoder export failed"

if [[ ! -f "$ES_JAR" || -n "$(find "$ES_PROJECT/src" "$ES_PROJECT/pom.xml" -newer "$ES_JAR" -print -quit)" ]]; then
  log "building the embedded Elasticsearch node (Maven)"
  mkdir -p "$STATE_DIR"
  if ! JAVA_HOME="$(find_java_home)" mvn -q -B -f "$ES_PROJECT/pom.xml" package >"$STATE_DIR/maven.log" 2>&1; then
    grep -v '^WARNING' "$STATE_DIR/maven.log" | tail -40 >&2
    die "Maven build of devtools/elasticsearch failed (full log: $STATE_DIR/maven.log)"
  fi
fi
log "setup complete (venv $VENV)"
