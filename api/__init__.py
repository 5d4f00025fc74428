"""hybridrec's HTTP API: an app factory, one blueprint per feature."""
from api.app import create_app

__all__ = ["create_app"]
