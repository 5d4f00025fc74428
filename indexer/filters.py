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

    def clause(self) -> dict[str, Any]:
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
        bool_query: dict[str, Any] = {"filter": must}
        if self.exclude_ids:
            bool_query["must_not"] = [{"ids": {"values": list(self.exclude_ids)}}]
        return {"bool": bool_query}
