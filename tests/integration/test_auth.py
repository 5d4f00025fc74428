"""API keys with scopes (401 without a key, 403 without the scope), open reads, per-key rate limits."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

READER = "reader-secret-0123456789"
WRITER = "writer-secret-0123456789"
ADMIN = "admin-secret-01234567890"
KEYS = f"reader:{READER}:read;writer:{WRITER}:read+write;ops:{ADMIN}:read+write+admin"


def make_client(settings, **overrides):
    from api import create_app
    from indexer.settings import load_settings

    custom = load_settings(**{**settings.model_dump(), "api_keys": KEYS, **overrides})
    return create_app({"TESTING": True}, settings=custom).test_client()


def test_keys_and_scopes(fresh, settings):
    client = make_client(settings)
    missing = client.get("/v1/users/u1/recommendations")
    assert missing.status_code == 401 and missing.mimetype == "application/problem+json"
    wrong = client.get("/v1/users/u1/recommendations", headers={"X-API-Key": READER + "x"})
    assert wrong.status_code == 401
    assert client.get("/v1/users/u1/recommendations", headers={"X-API-Key": READER}).status_code == 200
    assert client.get("/v1/users/u1/recommendations", headers={"Authorization": f"Bearer {READER}"}).status_code == 200
    event = {"user_id": "u1", "item_id": "i1", "type": "view"}
    denied = client.post("/v1/events", json=event, headers={"X-API-Key": READER})
    assert denied.status_code == 403 and "write" in denied.get_json()["detail"]
    assert client.post("/v1/events", json=event, headers={"X-API-Key": WRITER}).status_code == 202
    assert client.post("/v1/admin/reindex", headers={"X-API-Key": WRITER}).status_code == 403
    assert client.get("/v1/admin/indices", headers={"X-API-Key": ADMIN}).status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_open_reads_still_guard_writes(fresh, settings):
    client = make_client(settings, open_reads=True)
    assert client.get("/v1/users/u1/recommendations").status_code == 200
    assert client.post("/v1/events", json={"user_id": "u", "item_id": "i", "type": "view"}).status_code == 401


def test_rate_limit_per_key(fresh, settings):
    client = make_client(settings, rate_limit="3/minute")
    codes = [client.get("/v1/users/u1/recommendations", headers={"X-API-Key": READER}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/v1/users/u1/recommendations", headers={"X-API-Key": READER})
    assert limited.mimetype == "application/problem+json" and limited.headers.get("Retry-After")
    # Another key has its own budget.
    assert client.get("/v1/users/u1/recommendations", headers={"X-API-Key": WRITER}).status_code == 200


def test_invalid_key_settings_fail_fast(settings):
    from indexer.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="API_KEYS"):
        load_settings(api_keys="ops:short:admin")
    with pytest.raises(SettingsError, match="scopes"):
        load_settings(api_keys="ops:0123456789abcdefgh:root")
