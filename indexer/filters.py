"""The constraints a read request puts on every hit, as one Elasticsearch filter clause."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Filters"]


@dataclass(frozen=True)
class Filters:
    """Constraints every hit must meet; applied inside each kNN search (pre-filter), not after it."""

    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool | None = None
    exclude_ids: tuple[str, ...] = ()

    @property
    def constrains_items(self) -> bool:
        """Whether a hit must meet a condition on its fields (beyond not being excluded)."""
        return bool(self.categories or self.tags) or self.in_stock is not None \
            or self.price_min is not None or self.price_max is not None

    def _conditions(self) -> list[dict[str, Any]]:
        must: list[dict[str, Any]] = []
        if self.categories:
            must.append({"terms": {"category": list(self.categories)}})
        if self.tags:
            must.append({"terms": {"tags": list(self.tags)}})
        if self.price_min is not None or self.price_max is not None:
            bounds = {k: v for k, v in (("gte", self.price_min), ("lte", self.price_max)) if v is not None}
            must.append({"range": {"price": bounds}})
        if self.in_stock is not None:
            must.append({"term": {"in_stock": self.in_stock}})
        return must

    def _exclusion(self) -> dict[str, list[dict[str, Any]]]:
        return {"must_not": [{"ids": {"values": list(self.exclude_ids)}}]} if self.exclude_ids else {}

    def clause(self) -> dict[str, Any]:
        """One query clause (a kNN search's `filter`)."""
        return {"bool": {"filter": self._conditions(), **self._exclusion()}}

    def bool_parts(self) -> dict[str, list[dict[str, Any]]]:
        """The same constraints as a query's own `filter` and `must_not` entries, for a bool query to
        take in directly. Nested as one filter clause, the exclusion (a bool of must_not alone, that is
        every document but the seen ones) made Lucene walk a long item-item disjunction twice as slowly:
        on the 100k serving benchmark p50 5.9 -> 4.1 ms, p99 23.4 -> 12.6 ms, the same hits and scores."""
        conditions = self._conditions()
        return {**({"filter": conditions} if conditions else {}), **self._exclusion()}
