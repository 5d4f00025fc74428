"""Query-string parsing for the read endpoints into ReadParams (list parameters repeat or use commas)."""
from __future__ import annotations

from werkzeug.datastructures import MultiDict

from indexer.read_params import ReadParams

__all__ = ["LIST_PARAMS", "ReadParams", "parse_params"]

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
