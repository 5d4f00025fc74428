"""Schemathesis fuzzing of the served OpenAPI document: generated requests against the real app (real
Elasticsearch and Redis) must never get a 5xx, nor an answer the document does not describe. CI runs a
small count per operation; scripts/fuzz.sh runs thousands (HYBRIDREC_FUZZ_EXAMPLES)."""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import build_spec
from tests.helpers import PREFIX

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("HYBRIDREC_FUZZ_EXAMPLES", "15"))
SEEN: Counter[int] = Counter()


# The document the app serves, built without one: collecting this module (say, for `pytest tests`) must not
# need Elasticsearch. The app the requests go to is built when the tests run (below).
DOCUMENT = json.loads(json.dumps(build_spec()))
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.location = "/openapi.json"  # as schemathesis.openapi.from_wsgi has it: requests go to the app's root


@pytest.fixture(scope="module")
def fuzzed_app() -> Flask:
    """The real app on its own indices, as the target of every generated request."""
    from api import create_app
    from indexer.clients import make_es
    from indexer.lifecycle import ensure_indices
    from indexer.settings import load_settings

    # Own index prefix and broker DB with no worker: enqueued writes (even reindex) only pile up there.
    custom = load_settings(index_prefix=f"{PREFIX}-fz", broker_url="redis://127.0.0.1:6379/12",
                           rate_limit="100000/second")  # limits are tested elsewhere; here they would hide handlers
    ensure_indices(make_es(custom), custom)
    app = create_app({"TESTING": True}, settings=custom)
    assert app.test_client().get("/openapi.json").get_json() == DOCUMENT  # the fuzzed document is the served one
    return app


@schema.parametrize()
@hypothesis_settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                     suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, fuzzed_app):
    response = case.call(app=fuzzed_app)  # the app exists only once the tests run (see DOCUMENT)
    SEEN[response.status_code] += 1
    assert response.status_code < 500, \
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/problem+json"), response.text[:200]
    # The answer is one the document describes: its status code, content type and body schema. (Checks
    # that resend requests over a network are left out: the app runs in-process.)
    case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                             response_schema_conformance])


def test_report_fuzz_counts():
    """Runs last in this module: prints how many generated requests were sent and their statuses."""
    total = sum(SEEN.values())
    print(f"\nfuzz: {total} generated requests, statuses {dict(sorted(SEEN.items()))}, "
          f"server errors {sum(v for k, v in SEEN.items() if k >= 500)}")
    assert total > 0
