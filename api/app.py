"""The Flask app factory: settings, shared clients, blueprints, error handling."""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask

from api.json_provider import OrjsonProvider
from indexer.encoder import get_query_encoder
from indexer.heap import freeze_long_lived
from indexer.settings import Settings, load_settings

log = logging.getLogger(__name__)


def create_app(config: dict[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    """Build the API. `settings` defaults to the HYBRIDREC_* environment (validated here, at start-up)."""
    from api import auth, errors, events, health, items, models, observability, openapi, recommendations, users
    from api.services import build_services

    settings = settings or load_settings()
    app = Flask("hybridrec")
    app.json = OrjsonProvider(app)
    app.config.update(MAX_CONTENT_LENGTH=16 * 1024 * 1024, JSON_SORT_KEYS=False)
    if config:
        app.config.update(config)
    app.extensions["hybridrec"] = build_services(settings)
    observability.configure_logging()
    observability.init_app(app)
    errors.init_app(app)
    app.extensions["hybridrec_limiter"] = auth.init_app(app, settings)
    for module in (health, items, events, recommendations, models, users, openapi):
        app.register_blueprint(module.bp)
    if not app.testing:
        warm_up(settings)
    return app


def warm_up(settings: Settings) -> None:
    """Load the query encoder and run it once now, as each API worker starts (gunicorn builds the app per
    worker), instead of on the first request with `q`, which would wait seconds for it."""
    started = time.perf_counter()
    encoder = get_query_encoder(settings)
    encoder.encode(["warm-up"])
    log.info("query encoder %s (%s) loaded at start-up in %.2f s", settings.model, encoder.backend,
             time.perf_counter() - started)
    freeze_long_lived("the query encoder")
