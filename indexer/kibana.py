"""Kibana saved objects: import mappings/kibana/*.ndjson into Kibana and check the file against our mappings."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3

from indexer.errors import HybridrecError
from indexer.mappings import MAPPINGS_DIR

SAVED_OBJECTS_FILE = MAPPINGS_DIR / "kibana" / "hybridrec.ndjson"
IMPORT_PATH = "/api/saved_objects/_import?overwrite=true"
ALIAS_PREFIX = "hybridrec-"  # data view titles are the aliases of the default index prefix
RECORDS_FIELD = "___records___"  # Lens's pseudo-field for "count of documents"
LAYER_REF_PREFIX = "indexpattern-datasource-layer-"
XY_ACCESSORS = ("xAccessor", "splitAccessor")
METRIC_ACCESSORS = ("metricAccessor", "secondaryMetricAccessor", "maxAccessor", "breakdownByAccessor")


class KibanaError(HybridrecError):
    """Kibana refused or failed the saved-objects import, or could not be reached."""


def import_saved_objects(
    url: str,
    ndjson: Path,
    *,
    api_key: str | None = None,
    username: str | None = None,
    password: str | None = None,
    ca_cert: str | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """POST the NDJSON file to Kibana's saved-objects import API (overwriting) and return its JSON answer.

    `url` is Kibana's base URL, optionally with a space (`http://host:5601/s/team`). Raises KibanaError when
    Kibana cannot be reached, answers non-2xx, or answers 200 with `success: false` (Kibana reports
    per-object failures such as missing references that way).
    """
    data, content_type = urllib3.encode_multipart_formdata(
        # Kibana rejects an upload whose file name does not end in .ndjson.
        {"file": (f"{ndjson.stem}.ndjson", ndjson.read_bytes(), "application/ndjson")}
    )
    headers = {"kbn-xsrf": "true", "Content-Type": content_type}
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    elif username is not None:
        headers["Authorization"] = urllib3.make_headers(basic_auth=f"{username}:{password or ''}")["authorization"]
    endpoint = url.rstrip("/") + IMPORT_PATH
    pool = urllib3.PoolManager(ca_certs=ca_cert) if ca_cert else urllib3.PoolManager()
    try:
        # No retries here: the caller sees one clear failure and can rerun (the import overwrites, so it is safe).
        response = pool.request("POST", endpoint, body=data, headers=headers,
                                timeout=urllib3.Timeout(total=timeout), retries=False)
    except urllib3.exceptions.HTTPError as exc:
        raise KibanaError(f"could not reach Kibana at {url}: {exc}") from exc
    finally:
        pool.clear()
    text = response.data.decode("utf-8", errors="replace")
    if not 200 <= response.status < 300:
        raise KibanaError(f"Kibana import at {endpoint} answered HTTP {response.status}: {_short(text)}")
    try:
        result = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KibanaError(f"Kibana import answered HTTP {response.status} with non-JSON: {_short(text)}") from exc
    if not isinstance(result, dict):
        raise KibanaError(f"Kibana import answered an unexpected body: {_short(text)}")
    if result.get("success") is False:
        raise KibanaError(f"Kibana imported {result.get('successCount', 0)} objects but refused others: "
                          f"{_short(json.dumps(result.get('errors', [])))}")
    return result


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_saved_objects(ndjson: Path, mappings_dir: Path) -> list[str]:
    """Problems in a saved-objects NDJSON file (empty list: none).

    Checks that every line is a JSON saved object, that ids are unique per type, that every reference
    resolves to an object in the file, and that every field an object uses (data view time field, Lens
    column fields) exists in the mapping of the index its data view names.
    """
    problems: list[str] = []
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for number, obj, problem in _read_objects(ndjson):
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        key = (obj["type"], obj["id"])
        if key in objects:
            problems.append(f"line {number}: duplicate {key[0]} id {key[1]!r}")
        else:
            objects[key] = obj
    for (kind, obj_id), obj in objects.items():
        label = f"{kind} {obj_id!r}"
        for ref in obj.get("references", []):
            if not _resolves(ref, objects):
                problems.append(f"{label}: reference {ref.get('name')!r} to {ref.get('type')} "
                                f"{ref.get('id')!r} is not in the file")
        if kind == "index-pattern":
            problems += _data_view_problems(label, obj, mappings_dir)
        elif kind == "lens":
            problems += _lens_problems(label, obj["attributes"], _ref_map(obj["references"]), objects, mappings_dir)
        elif kind == "dashboard":
            problems += _dashboard_problems(label, obj, objects, mappings_dir)
    return problems


def _read_objects(ndjson: Path) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    with ndjson.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, {}, f"not JSON ({exc.msg})"
                continue
            if not isinstance(obj, dict):
                yield number, {}, "not a JSON object"
            elif "exportedCount" in obj and "type" not in obj:
                continue  # the summary line Kibana's export appends
            elif not all(isinstance(obj.get(k), str) and obj[k] for k in ("type", "id")):
                yield number, {}, "saved object without a string 'type' and 'id'"
            elif not isinstance(obj.get("attributes"), dict):
                yield number, {}, "saved object without an 'attributes' object"
            elif not isinstance(obj.get("references", []), list):
                yield number, {}, "'references' is not a list"
            else:
                obj.setdefault("references", [])
                yield number, obj, None


def _resolves(ref: Any, objects: dict[tuple[str, str], dict[str, Any]]) -> bool:
    return isinstance(ref, dict) and (ref.get("type"), ref.get("id")) in objects


def _ref_map(references: list[Any]) -> dict[str, tuple[str, str]]:
    return {str(r["name"]): (str(r.get("type")), str(r.get("id")))
            for r in references if isinstance(r, dict) and "name" in r}


def mapping_fields(mapping: dict[str, Any]) -> dict[str, str]:
    """Every field path of an index definition (objects, sub-fields like `title.raw`) and its type."""
    fields: dict[str, str] = {}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, spec in properties.items():
            path = prefix + name
            fields[path] = spec.get("type", "object")
            walk(spec.get("properties", {}), path + ".")
            for sub, sub_spec in spec.get("fields", {}).items():
                fields[f"{path}.{sub}"] = sub_spec.get("type", "object")

    walk(mapping.get("mappings", {}).get("properties", {}), "")
    return fields


def _fields_for_title(title: Any, mappings_dir: Path) -> tuple[dict[str, str] | None, str | None]:
    """The mapped fields behind a data view title `hybridrec-<kind>`, or why there are none."""
    if not isinstance(title, str) or not title.startswith(ALIAS_PREFIX):
        return None, f"title {title!r} is not a hybridrec alias ({ALIAS_PREFIX}<kind>)"
    path = mappings_dir / (title[len(ALIAS_PREFIX):].replace("-", "_") + ".json")
    if not path.is_file():
        return None, f"title {title!r} has no mapping file {path.name}"
    return mapping_fields(json.loads(path.read_text(encoding="utf-8"))), None


def _data_view_problems(label: str, obj: dict[str, Any], mappings_dir: Path) -> list[str]:
    fields, problem = _fields_for_title(obj["attributes"].get("title"), mappings_dir)
    if fields is None:
        return [f"{label}: {problem}"]
    time_field = obj["attributes"].get("timeFieldName")
    if time_field is None:
        return []
    if time_field not in fields:
        return [f"{label}: time field {time_field!r} is not in the mapping"]
    if fields[time_field] not in ("date", "date_nanos"):
        return [f"{label}: time field {time_field!r} is a {fields[time_field]}, not a date"]
    return []


def _lens_problems(label: str, attributes: dict[str, Any], refs: dict[str, tuple[str, str]],
                   objects: dict[tuple[str, str], dict[str, Any]], mappings_dir: Path) -> list[str]:
    """Each Lens layer must name a data view of the file and use only fields its mapping has."""
    problems: list[str] = []
    state = attributes.get("state") or {}
    datasources = state.get("datasourceStates") or {}
    layers = (datasources.get("formBased") or datasources.get("indexpattern") or {}).get("layers") or {}
    if not layers:
        if (datasources.get("textBased") or {}).get("layers"):
            return []  # ES|QL charts name indices in their query, not through data views
        return [f"{label}: Lens state has no form-based layers"]
    columns_by_layer: dict[str, set[str]] = {}
    for layer_id, layer in layers.items():
        columns = layer.get("columns") or {}
        columns_by_layer[layer_id] = set(columns)
        if set(layer.get("columnOrder") or []) != set(columns):
            problems.append(f"{label}: layer {layer_id!r} columnOrder does not list exactly its columns")
        ref = refs.get(LAYER_REF_PREFIX + layer_id)
        if ref is None or ref[0] != "index-pattern":
            problems.append(f"{label}: layer {layer_id!r} has no {LAYER_REF_PREFIX}{layer_id} data view reference")
            continue
        data_view = objects.get(ref)
        if data_view is None:
            continue  # already reported as a dangling reference
        fields, problem = _fields_for_title(data_view["attributes"].get("title"), mappings_dir)
        if fields is None:
            problems.append(f"{label}: layer {layer_id!r}: {problem}")
            continue
        for column_id, column in columns.items():
            for field in _column_fields(column):
                if field != RECORDS_FIELD and field not in fields:
                    problems.append(f"{label}: column {column_id!r} uses field {field!r}, "
                                    f"not in the mapping of {data_view['attributes']['title']}")
            order_by = (column.get("params") or {}).get("orderBy") or {}
            if order_by.get("type") == "column" and order_by.get("columnId") not in columns:
                problems.append(f"{label}: column {column_id!r} is ordered by a missing column")
    problems += _accessor_problems(label, state.get("visualization") or {}, columns_by_layer)
    return problems


def _column_fields(column: dict[str, Any]) -> list[str]:
    params = column.get("params") or {}
    fields = [column.get("sourceField"), params.get("sortField"), *(params.get("secondaryFields") or [])]
    return [f for f in fields if isinstance(f, str)]


def _accessor_problems(label: str, visualization: dict[str, Any], columns_by_layer: dict[str, set[str]]) -> list[str]:
    """The chart must draw columns its layer defines (XY data layers and metric charts are checked)."""
    wanted: list[tuple[str, str]] = []
    for layer in visualization.get("layers") or []:
        if layer.get("layerType", "data") == "data":
            ids = [layer.get(k) for k in XY_ACCESSORS] + list(layer.get("accessors") or [])
            wanted += [(layer.get("layerId", ""), a) for a in ids if isinstance(a, str)]
    if "metricAccessor" in visualization:
        wanted += [(visualization.get("layerId", ""), visualization[k]) for k in METRIC_ACCESSORS
                   if isinstance(visualization.get(k), str)]
    return [f"{label}: the chart uses column {column!r}, which layer {layer_id!r} does not define"
            for layer_id, column in wanted if column not in columns_by_layer.get(layer_id, set())]


def _dashboard_problems(label: str, obj: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]],
                        mappings_dir: Path) -> list[str]:
    """Panels must point at objects of the file (by reference) or be valid Lens states (by value)."""
    try:
        panels = json.loads(obj["attributes"].get("panelsJSON") or "[]")
    except json.JSONDecodeError as exc:
        return [f"{label}: panelsJSON is not JSON ({exc.msg})"]
    if not isinstance(panels, list):
        return [f"{label}: panelsJSON is not a list"]
    problems: list[str] = []
    refs = _ref_map(obj["references"])
    for panel in panels:
        if not isinstance(panel, dict):
            problems.append(f"{label}: a panel is not a JSON object")
            continue
        index = str(panel.get("panelIndex", ""))
        prefix = f"{index}:"
        panel_refs = {name[len(prefix):]: ref for name, ref in refs.items() if name.startswith(prefix)}
        ref_name = panel.get("panelRefName")
        if ref_name:
            if ref_name not in panel_refs and ref_name not in refs:
                problems.append(f"{label}: panel {index!r} refers to {ref_name!r}, which has no reference")
            continue
        attributes = (panel.get("embeddableConfig") or {}).get("attributes")
        if panel.get("type") == "lens" and isinstance(attributes, dict):
            panel_label = f"{label} panel {index!r}"
            if not panel_refs:  # older by-value panels keep their references inside the attributes
                inner = [r for r in attributes.get("references") or [] if isinstance(r, dict)]
                problems += [f"{panel_label}: reference {r.get('name')!r} to {r.get('type')} {r.get('id')!r} "
                             "is not in the file" for r in inner if not _resolves(r, objects)]
                panel_refs = _ref_map(inner)
            problems += _lens_problems(panel_label, attributes, panel_refs, objects, mappings_dir)
    return problems
