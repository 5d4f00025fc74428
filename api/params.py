"""Request parsing for the endpoints: query strings into ReadParams (list parameters repeat or use commas),
and ids in URL paths."""
from __future__ import annotations

import re

from werkzeug.datastructures import MultiDict

from indexer.documents import ID_PATTERN, MAX_ID_BYTES, MAX_ID_CHARS, within_id_bytes
from indexer.errors import InvalidInput
from indexer.read_params import ReadParams

__all__ = ["LIST_PARAMS", "ReadParams", "parse_params", "path_id"]

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


def path_id(value: str, name: str, *, item: bool = True) -> str:
    """An id from the URL path, held to the rules ids are stored under: 1 to 256 characters and at most 512
    UTF-8 bytes, and for item and task ids no whitespace (a user id is whatever events may carry). Anything
    no document or event could carry is a 400 naming it, not a lookup or an empty answer."""
    rule = ", no whitespace or '/'" if item else ""
    refused = InvalidInput(f"{name}: 1 to {MAX_ID_CHARS} characters (at most {MAX_ID_BYTES} UTF-8 bytes){rule}")
    if len(value) > MAX_ID_CHARS or (item and not re.fullmatch(ID_PATTERN, value)):
        raise refused
    try:
        within_id_bytes(value)  # the byte rule stored ids are held to, in its one home
    except ValueError:
        raise refused from None
    return value
