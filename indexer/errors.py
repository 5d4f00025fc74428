"""Domain exceptions shared by the API and the workers; all of them pickle, since they cross Celery."""
from __future__ import annotations


class HybridrecError(Exception):
    """Base class: a message meant for the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.message,))


class InvalidInput(HybridrecError):
    """The request or item is malformed (HTTP 400)."""


class NotFound(HybridrecError):
    """The item, user, task or index version does not exist (HTTP 404)."""


class Conflict(HybridrecError):
    """The operation clashes with current state, e.g. nothing to roll back to (HTTP 409)."""


class BackendUnavailable(HybridrecError):
    """Elasticsearch or Redis did not answer in time (HTTP 503); transient, worth a retry."""


class IndexVerificationFailed(HybridrecError):
    """A freshly built index version failed its checks; the alias was not swapped."""
