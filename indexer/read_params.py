"""Read request parameters (recommendations, search, similar): validated, bounded, unknown ones refused."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from indexer.filters import Filters

MAX_K = 100
MAX_PAGE = 20


class ReadParams(BaseModel):
    # "inf" and "nan" parse as floats; refuse them here rather than let them reach Elasticsearch
    # (an infinite price bound is not valid JSON) or make every bound check false.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    page: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 1
    q: Annotated[str, Field(max_length=1000)] | None = None
    category: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = ()
    tags: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()
    price_min: Annotated[float, Field(ge=0)] | None = None
    price_max: Annotated[float, Field(ge=0)] | None = None
    in_stock: bool | None = None
    exclude_seen: bool = True
    exclude: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = ()
    # Left out (None), fusion, the user-vector, item-item and latent-factor weights and the popularity
    # prior take the serving model's values, chosen on held-out events; without a model, RRF over the
    # content retrievers with weight 1 and no prior (see resolved()).
    fusion: Literal["rrf", "linear"] | None = None
    normalization: Literal["minmax", "zscore"] = "minmax"
    rrf_k: Annotated[int, Field(ge=1, le=1000)] = 60
    w_bm25: Annotated[float, Field(ge=0, le=100)] = 1.0
    w_user: Annotated[float, Field(ge=0, le=100)] | None = None
    w_query: Annotated[float, Field(ge=0, le=100)] = 1.0
    w_item: Annotated[float, Field(ge=0, le=100)] | None = None
    w_recent: Annotated[float, Field(ge=0, le=100)] | None = None
    w_cf: Annotated[float, Field(ge=0, le=100)] | None = None
    mmr_lambda: Annotated[float, Field(ge=0, le=1)] | None = None
    popularity_weight: Annotated[float, Field(ge=0, le=10)] | None = None
    explain: bool = False
    user_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    @field_validator("q")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _price_range(self) -> ReadParams:
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError(f"price_min ({self.price_min}) is greater than price_max ({self.price_max})")
        if all(w == 0 for w in (self.w_bm25, self.w_user, self.w_query, self.w_item, self.w_recent, self.w_cf)):
            raise ValueError("at least one of w_bm25, w_user, w_query, w_item, w_recent, w_cf must be greater than 0")
        return self

    def resolved(self, defaults: Mapping[str, Any] | None = None) -> ReadParams:
        """Every parameter the request left out, filled: from `defaults` (the serving model's learned
        fusion settings) where given, else the model-free defaults."""
        given = self.model_dump(exclude_unset=False)
        fallback = {"fusion": "rrf", "w_user": 1.0, "w_item": 0.0, "w_recent": 0.0, "w_cf": 0.0,
                    "popularity_weight": 0.0,
                    **(defaults or {})}
        filled = {key: fallback[key] if given.get(key) is None else given[key] for key in fallback}
        return self.model_copy(update=filled)

    def filters(self, extra_exclude: tuple[str, ...] = ()) -> Filters:
        return Filters(categories=self.category, tags=self.tags, price_min=self.price_min,
                       price_max=self.price_max, in_stock=self.in_stock,
                       exclude_ids=tuple(dict.fromkeys(self.exclude + extra_exclude)))

    def weights(self) -> dict[str, float]:
        """Per retriever weight (of a resolved request: no None left)."""
        return {"bm25": self.w_bm25, "user_knn": self.w_user or 0.0, "query_knn": self.w_query,
                "item_item": self.w_item or 0.0, "item_recent": self.w_recent or 0.0, "cf_knn": self.w_cf or 0.0}
