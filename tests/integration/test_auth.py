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
    assert limited.mimetype == "application/problem+json" and int(limited.headers["Retry-After"]) >= 1
    # Another key has its own budget.
    assert client.get("/v1/users/u1/recommendations", headers={"X-API-Key": WRITER}).status_code == 200


def test_wrong_keys_are_rate_limited_per_address(fresh, settings):
    from api.auth import FAILED_KEY_LIMIT

    client = make_client(settings)
    codes = [client.get("/v1/users/u1/recommendations", headers={"X-API-Key": f"guess-{n}"}).status_code
             for n in range(FAILED_KEY_LIMIT.amount + 1)]
    assert codes == [401] * FAILED_KEY_LIMIT.amount + [429]
    limited = client.post("/v1/events", json={"user_id": "u", "item_id": "i", "type": "view"})
    assert limited.status_code == 429 and limited.mimetype == "application/problem+json"
    assert int(limited.headers["Retry-After"]) >= 1
    # A valid key is not held back by its address's failed guesses: it has its own limit.
    assert client.get("/v1/users/u1/recommendations", headers={"X-API-Key": READER}).status_code == 200


def test_method_not_allowed_names_the_allowed_methods(fresh, settings):
    response = make_client(settings).delete("/v1/events")
    assert response.status_code == 405 and response.mimetype == "application/problem+json"
    assert "POST" in response.headers["Allow"]


def test_invalid_key_settings_fail_fast(settings):
    from indexer.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="API_KEYS"):
        load_settings(api_keys="ops:short:admin")
    with pytest.raises(SettingsError, match="scopes"):
        load_settings(api_keys="ops:0123456789abcdefgh:root")
