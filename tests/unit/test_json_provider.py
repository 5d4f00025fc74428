"""The orjson response provider encodes what the API returns, numpy values included, to the same JSON
values Flask's own provider gives."""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from api.json_provider import OrjsonProvider


def _apps() -> tuple[Flask, Flask]:
    fast, plain = Flask("fast"), Flask("plain")
    fast.json = OrjsonProvider(fast)
    plain.json = DefaultJSONProvider(plain)
    return fast, plain


def test_numpy_values_encode_as_numbers():
    fast, _ = _apps()
    body = {"score": np.float32(0.5), "rank": np.int64(3), "vector": np.array([0.25, 1.0]), "f64": np.float64(2.5)}
    with fast.app_context():
        response = fast.json.response(body)
    assert response.mimetype == "application/json"
    assert json.loads(response.get_data()) == {"score": 0.5, "rank": 3, "vector": [0.25, 1.0], "f64": 2.5}


def test_same_values_as_flasks_provider():
    fast, plain = _apps()
    stamp = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
    body = {"b": [1, 2.5, None, True, "é"], "a": {"nested": {1: "int key"}}, "when": stamp,
            "id": uuid.UUID(int=7), "price": Decimal("9.99")}
    with fast.app_context():
        ours = fast.json.response(body).get_data()
    with plain.app_context():
        theirs = plain.json.response(body).get_data()
    assert json.loads(ours) == json.loads(theirs)
    assert list(json.loads(ours)) == ["a", "b", "id", "price", "when"]  # keys sorted, as Flask sorts them
    assert json.loads(ours)["when"] == "Tue, 01 Dec 2026 21:00:00 GMT"  # Flask's date format, not ISO
    assert ours.endswith(b"\n")


def test_request_bodies_still_parse_with_the_standard_library():
    fast, _ = _apps()
    assert fast.json.loads('{"version": 1180591620717411303424}') == {"version": 2 ** 70}
