"""Request parameter models for the read endpoints: validated, bounded, unknown parameters refused."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from werkzeug.datastructures import MultiDict

from indexer.search import Filters

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
    fusion: Literal["rrf", "linear"] = "rrf"
    normalization: Literal["minmax", "zscore"] = "minmax"
    rrf_k: Annotated[int, Field(ge=1, le=1000)] = 60
    w_bm25: Annotated[float, Field(ge=0, le=100)] = 1.0
    w_user: Annotated[float, Field(ge=0, le=100)] = 1.0
    w_query: Annotated[float, Field(ge=0, le=100)] = 1.0
    mmr_lambda: Annotated[float, Field(ge=0, le=1)] | None = None
    popularity_weight: Annotated[float, Field(ge=0, le=10)] = 0.0
    explain: bool = False
    user_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    @field_validator("q")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _price_range(self) -> "ReadParams":
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError(f"price_min ({self.price_min}) is greater than price_max ({self.price_max})")
        if self.w_bm25 == self.w_user == self.w_query == 0:
            raise ValueError("at least one of w_bm25, w_user, w_query must be greater than 0")
        return self

    def filters(self, extra_exclude: tuple[str, ...] = ()) -> Filters:
        return Filters(categories=self.category, tags=self.tags, price_min=self.price_min,
                       price_max=self.price_max, in_stock=self.in_stock,
                       exclude_ids=tuple(dict.fromkeys(self.exclude + extra_exclude)))

    def weights(self) -> dict[str, float]:
        return {"bm25": self.w_bm25, "user_knn": self.w_user, "query_knn": self.w_query}


LIST_PARAMS = {"category", "tags", "exclude"}


def parse_params(args: MultiDict[str, str], **fixed: object) -> ReadParams:
    """Build ReadParams from a query string: list parameters repeat or use commas."""
    data: dict[str, object] = {}
    for key in args:
        values = args.getlist(key)
        if key in LIST_PARAMS:
            data[key] = tuple(v.strip() for value in values for v in value.split(",") if v.strip())
        else:
            data[key] = values[-1]
    data.update(fixed)
    return ReadParams.model_validate(data)
