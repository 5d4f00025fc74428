"""Index lifecycle: versioned physical indices (<prefix>-items-vN) behind aliases, atomic swaps, retention, rollback.

The alias history is kept on the physical indices themselves: a swap stamps the index it leaves with the
time it stopped being live (`_meta.hybridrec.retired_ms`). Rollback and retention read those stamps, never
the version numbers: the version live before is the one retired last, and it is never pruned.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from elasticsearch import BadRequestError, Elasticsearch, NotFoundError

from indexer.errors import Conflict
from indexer.mappings import INDEX_KINDS, index_definition
from indexer.settings import Settings


@dataclass(frozen=True)
class IndexVersion:
    name: str
    version: int
    docs: int
    is_current: bool
    is_building: bool
    retired_ms: int | None = None  # when the alias last left this version; None: never live (or before stamps)


def alias_name(settings: Settings, kind: str) -> str:
    return f"{settings.index_prefix}-{kind.replace('_', '-')}"


def building_alias(settings: Settings, kind: str = "items") -> str:
    """Points at a version under construction, so live writes land in it too (no lost updates)."""
    return f"{alias_name(settings, kind)}-next"


def physical_name(settings: Settings, kind: str, version: int) -> str:
    return f"{alias_name(settings, kind)}-v{version}"


def _version_of(settings: Settings, kind: str, name: str) -> int | None:
    match = re.fullmatch(re.escape(f"{alias_name(settings, kind)}-v") + r"(\d+)", name)
    return int(match.group(1)) if match else None


def _alias_targets(es: Elasticsearch, alias: str) -> list[str]:
    try:
        return sorted(es.indices.get_alias(name=alias).body.keys())
    except NotFoundError:
        return []


def current_index(es: Elasticsearch, settings: Settings, kind: str = "items") -> str | None:
    targets = _alias_targets(es, alias_name(settings, kind))
    return targets[0] if targets else None


def write_targets(es: Elasticsearch, settings: Settings, kind: str = "items") -> list[str]:
    """Every index a live write must reach: the alias target plus a version being built, if any."""
    targets = _alias_targets(es, alias_name(settings, kind))
    for name in _alias_targets(es, building_alias(settings, kind)):
        if name not in targets:
            targets.append(name)
    return targets


def list_versions(es: Elasticsearch, settings: Settings, kind: str = "items") -> list[IndexVersion]:
    """All physical versions of one index kind, oldest first, with document counts and alias state."""
    pattern = f"{alias_name(settings, kind)}-v*"
    found = es.indices.get(index=pattern, ignore_unavailable=True, allow_no_indices=True).body
    current = set(_alias_targets(es, alias_name(settings, kind)))
    building = set(_alias_targets(es, building_alias(settings, kind)))
    versions = []
    for name, definition in found.items():
        number = _version_of(settings, kind, name)
        if number is None:
            continue
        docs = int(es.count(index=name)["count"])
        retired = definition.get("mappings", {}).get("_meta", {}).get("hybridrec", {}).get("retired_ms")
        versions.append(IndexVersion(name, number, docs, name in current, name in building,
                                     int(retired) if retired is not None else None))
    return sorted(versions, key=lambda v: v.version)


def _stamp_retired(es: Elasticsearch, index: str) -> None:
    """Record on `index` that the alias leaves it now. _meta is replaced whole by put_mapping: keep the rest."""
    meta = dict(es.indices.get_mapping(index=index)[index]["mappings"].get("_meta", {}))
    meta["hybridrec"] = {**meta.get("hybridrec", {}), "retired_ms": int(time.time() * 1000)}
    es.indices.put_mapping(index=index, meta=meta)


def create_version(es: Elasticsearch, settings: Settings, kind: str = "items") -> str:
    """Create the next physical version of `kind` from its mapping file; the alias is not touched."""
    existing = [v.version for v in list_versions(es, settings, kind)]
    name = physical_name(settings, kind, max(existing, default=0) + 1)
    _create(es, settings, kind, name)
    return name


def _create(es: Elasticsearch, settings: Settings, kind: str, name: str) -> None:
    body = index_definition(kind, settings)
    es.indices.create(index=name, settings=body.get("settings"), mappings=body["mappings"])


def swap_alias(es: Elasticsearch, settings: Settings, new_index: str, kind: str = "items") -> str | None:
    """Point the alias at `new_index` in one atomic cluster-state update; returns the previous target."""
    alias = alias_name(settings, kind)
    old = _alias_targets(es, alias)
    # Stamped before the swap: a crash in between leaves a stamp on a version still live, which is
    # harmless (the live version is never a rollback or prune candidate, and its next swap stamps it again).
    for name in old:
        if name != new_index:
            _stamp_retired(es, name)
    actions: list[dict[str, object]] = [{"remove": {"index": name, "alias": alias}}
                                        for name in old if name != new_index]
    actions.append({"add": {"index": new_index, "alias": alias, "is_write_index": True}})
    es.indices.update_aliases(actions=actions)
    return old[0] if old else None


def ensure_indices(es: Elasticsearch, settings: Settings) -> dict[str, str]:
    """Create v1 of every index kind whose alias does not exist yet. Safe to call concurrently."""
    result = {}
    for kind in INDEX_KINDS:
        current = current_index(es, settings, kind)
        if current is None:
            name = physical_name(settings, kind, 1)
            try:
                _create(es, settings, kind, name)
            except BadRequestError as exc:
                if exc.error != "resource_already_exists_exception":
                    raise
            es.indices.update_aliases(actions=[{"add": {"index": name, "alias": alias_name(settings, kind),
                                                         "is_write_index": True}}])
            current = name
        else:
            add_missing_fields(es, settings, kind, current)
        result[kind] = current
    return result


def add_missing_fields(es: Elasticsearch, settings: Settings, kind: str, index: str) -> list[str]:
    """Add the fields the mapping file has and the index lacks (an index created by an older release);
    a field that exists is never changed."""
    wanted = index_definition(kind, settings)["mappings"]["properties"]
    have = es.indices.get_mapping(index=index)[index]["mappings"].get("properties", {})
    missing = {name: spec for name, spec in wanted.items() if name not in have}
    if missing:
        es.indices.put_mapping(index=index, properties=missing)
    return sorted(missing)


def drop_and_create(es: Elasticsearch, settings: Settings, kind: str) -> str:
    """Delete every physical version of `kind` and start again from an empty v1 (evaluation and tests)."""
    names = [v.name for v in list_versions(es, settings, kind)]
    if names:
        es.indices.delete(index=names)
    return ensure_indices(es, settings)[kind]


def set_building(es: Elasticsearch, settings: Settings, index: str | None, kind: str = "items") -> None:
    """Mark `index` as under construction (live writes go there too), or clear the mark with None."""
    alias = building_alias(settings, kind)
    actions: list[dict[str, object]] = [{"remove": {"index": name, "alias": alias}}
                                        for name in _alias_targets(es, alias)]
    if index is not None:
        actions.append({"add": {"index": index, "alias": alias}})
    if actions:
        es.indices.update_aliases(actions=actions)


def _by_recency(versions: list[IndexVersion], current: IndexVersion) -> list[IndexVersion]:
    """Rollback and retention candidates, the most recently live first. Versions never stamped (created
    before stamps, or never live) come after every stamped one, newest number first; an unstamped version
    numbered above the live one may be a build about to be marked, and is no candidate."""
    candidates = [v for v in versions if not v.is_current and not v.is_building
                  and (v.retired_ms is not None or v.version < current.version)]
    return sorted(candidates, key=lambda v: (v.retired_ms if v.retired_ms is not None else -1, v.version),
                  reverse=True)


def prune_versions(es: Elasticsearch, settings: Settings, keep: int | None = None, kind: str = "items") -> list[str]:
    """Delete the versions beyond the `keep` most recently live ones (by when they were live, not by
    number). Never deletes the live version, a build in progress, or the version that was live before."""
    keep = max(1, settings.keep_versions if keep is None else keep)
    versions = list_versions(es, settings, kind)
    current = next((v for v in versions if v.is_current), None)
    if current is None:
        return []
    doomed = _by_recency(versions, current)[keep:]
    for version in doomed:
        es.indices.delete(index=version.name)
    return [v.name for v in doomed]


def rollback_target(es: Elasticsearch, settings: Settings, kind: str = "items") -> tuple[IndexVersion, IndexVersion]:
    """(live version, the version that was live before it): the one the alias left last. The swap itself
    is `indexer.rollback.rollback`, which first brings that version up to date."""
    versions = list_versions(es, settings, kind)
    current = next((v for v in versions if v.is_current), None)
    if current is None:
        raise Conflict(f"alias {alias_name(settings, kind)} points at no index")
    candidates = _by_recency(versions, current)
    if not candidates:
        raise Conflict(f"no version that was live before {current.name} is kept: nothing to roll back to")
    return current, candidates[0]
