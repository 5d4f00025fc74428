"""Dataset adapters for the evaluation: JSONL items + events, RecBole atomic files, MovieLens-100K from the wheel."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from indexer.profile import event_weight

__all__ = ["Dataset", "Interaction", "load_jsonl", "load_ml100k", "load_recbole_dir", "parse_atomic",
           "recbole_interactions", "recbole_items"]

# A rating of 4 or 5 is the user saying they liked the film, so it becomes a "like" (weight 4 in the
# profile). A 1-3 still says the user chose to watch it, and RecBole counts every rating as a positive,
# so it becomes a "view" (weight 1) rather than a "dislike": a dislike would push the profile away from
# items the metrics then reward it for finding.
LIKE_THRESHOLD = 4.0

_TITLE_COLUMNS = ("movie_title", "title", "name", "item_name")
_TAG_COLUMNS = ("class", "genre", "genres", "categories", "tags")


@dataclass(frozen=True)
class Interaction:
    """One user-item event; every interaction counts as a positive for the ranking metrics."""

    user_id: str
    item_id: str
    ts: float
    type: str


@dataclass
class Dataset:
    """Catalog items (hybridrec item dicts) and the interactions on them, in file order."""

    name: str
    items: list[dict[str, Any]]
    interactions: list[Interaction]
    dropped: int = 0  # interactions on items absent from the catalog

    def __post_init__(self) -> None:
        known = {str(item.get("id")) for item in self.items}
        kept = [i for i in self.interactions if i.item_id in known]
        self.dropped += len(self.interactions) - len(kept)
        self.interactions = kept


def _timestamp(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def load_jsonl(items_path: Path, events_path: Path, name: str | None = None) -> Dataset:
    """Items as hybridrec items, one JSON object a line; events as {"user_id", "item_id", "type", "ts"}
    with ts in epoch seconds or ISO 8601 (a missing type is a view)."""
    items = [json.loads(line) for line in items_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    interactions = []
    for number, line in enumerate(events_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        raw = json.loads(line)
        try:
            kind = str(raw.get("type", "view"))
            event_weight(kind)  # fail on a type the profile code cannot weigh, naming the line
            interactions.append(Interaction(str(raw["user_id"]), str(raw["item_id"]), _timestamp(raw["ts"]), kind))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{events_path}:{number}: {exc}") from None
    return Dataset(name or items_path.stem, items, interactions)


def parse_atomic(text: str) -> list[dict[str, str]]:
    """Rows of a RecBole atomic file (tab-separated, header "name:type"), keyed by bare column name."""
    lines = text.splitlines()
    if not lines:
        return []
    header = [column.split(":")[0] for column in lines[0].split("\t")]
    # A short line leaves its last columns out rather than failing the file.
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line.strip()]


def _first(row: Mapping[str, str], columns: Iterable[str]) -> str:
    return next((row[c].strip() for c in columns if row.get(c, "").strip()), "")


def recbole_items(rows: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Atomic `.item` rows as items, in the shape workers.datasets.movielens_items gives the demo:
    genres as tags, the first genre the category, a short description naming genres and year."""
    items = []
    for row in rows:
        genres = [g for g in _first(row, _TAG_COLUMNS).split() if g]
        year = row.get("release_year", "").strip()
        items.append({
            "id": row["item_id"],
            "title": _first(row, _TITLE_COLUMNS) or f"item {row['item_id']}",
            "description": (f"A {' / '.join(genres).lower() or 'feature'} film"
                            + (f" released in {year}." if year else ".")),
            "category": genres[0] if genres else "Unknown",
            "tags": genres,
            "in_stock": True,
            "attributes": {"release_year": year} if year else {},
        })
    return items


def recbole_interactions(rows: Iterable[Mapping[str, str]],
                         like_threshold: float = LIKE_THRESHOLD) -> list[Interaction]:
    """Atomic `.inter` rows as events: rating >= like_threshold is a like, any other rating (or none) a view.
    A file without timestamps keeps its row order as time."""
    out = []
    for number, row in enumerate(rows):
        rating = row.get("rating", "").strip()
        kind = "like" if rating and float(rating) >= like_threshold else "view"
        ts = row.get("timestamp", "").strip()
        out.append(Interaction(row["user_id"], row["item_id"], float(ts) if ts else float(number), kind))
    return out


def load_recbole_dir(directory: Path, name: str | None = None, like_threshold: float = LIKE_THRESHOLD) -> Dataset:
    """`<name>.inter` and `<name>.item` from a directory (name defaults to the directory's name)."""
    name = name or directory.name
    inter = parse_atomic((directory / f"{name}.inter").read_text(encoding="latin-1"))
    item = parse_atomic((directory / f"{name}.item").read_text(encoding="latin-1"))
    return Dataset(name, recbole_items(item), recbole_interactions(inter, like_threshold))


def load_ml100k(cache_dir: Path, like_threshold: float = LIKE_THRESHOLD) -> Dataset:
    """MovieLens-100K read straight from the recbole wheel (downloaded once with pip into cache_dir)."""
    from indexer.datasets import movielens_items, read_atomic, recbole_wheel

    wheel = recbole_wheel(cache_dir)
    # movielens_items is what the demo indexes, so the evaluation embeds exactly the same text; its
    # popularity counts every rating and is replaced by training counts before indexing.
    items = [{k: v for k, v in item.items() if k not in ("popularity", "version")} for item in movielens_items(wheel)]
    return Dataset("ml-100k", items, recbole_interactions(read_atomic(wheel, "inter"), like_threshold))
