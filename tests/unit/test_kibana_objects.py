"""Kibana saved objects: the shipped NDJSON passes the checks, broken files are reported, and the import
posts the file the way Kibana's saved-objects API expects (against a local stand-in server)."""
from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from indexer.kibana import (
    SAVED_OBJECTS_FILE,
    KibanaError,
    check_saved_objects,
    import_saved_objects,
    mapping_fields,
)
from indexer.mappings import MAPPINGS_DIR


def read_shipped() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAVED_OBJECTS_FILE.read_text(encoding="utf-8").splitlines() if line]


def test_shipped_objects_have_no_problems() -> None:
    assert check_saved_objects(SAVED_OBJECTS_FILE, MAPPINGS_DIR) == []


def test_shipped_objects_cover_the_issue() -> None:
    objects = read_shipped()
    views = {o["attributes"]["title"]: o["attributes"].get("timeFieldName")
             for o in objects if o["type"] == "index-pattern"}
    assert views == {"hybridrec-items": None, "hybridrec-events": "ts", "hybridrec-users": "updated_at",
                     "hybridrec-reco-logs": "ts"}
    (dashboard,) = [o for o in objects if o["type"] == "dashboard"]
    assert dashboard["attributes"]["title"] == "hybridrec overview"
    panel_targets = {r["id"] for r in dashboard["references"]}
    lenses = {o["id"]: o for o in objects if o["type"] == "lens"}
    assert panel_targets == set(lenses)

    def columns(lens_id: str) -> list[tuple[str, str | None]]:
        layers = lenses[lens_id]["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
        return sorted((c["operationType"], c.get("sourceField")) for layer in layers.values()
                      for c in layer["columns"].values())

    assert ("average", "clicked") in columns("hybridrec-lens-ctr-by-strategy")
    assert ("terms", "strategy") in columns("hybridrec-lens-ctr-by-strategy")
    assert ("unique_count", "user_id") in columns("hybridrec-lens-profile-count")
    assert ("terms", "item_id") in columns("hybridrec-lens-top-items")
    assert {("date_histogram", "ts"), ("terms", "type")} <= set(columns("hybridrec-lens-events-by-type"))


def test_mapping_fields_include_sub_fields() -> None:
    fields = mapping_fields(json.loads((MAPPINGS_DIR / "items.json").read_text(encoding="utf-8")))
    assert fields["title.raw"] == "keyword"
    assert fields["tags.text"] == "text"
    assert fields["created_at"] == "date"


# A small valid file to break in the tests below: one data view and one Lens chart on it.
DATA_VIEW = {"type": "index-pattern", "id": "ev", "references": [],
             "attributes": {"title": "hybridrec-events", "timeFieldName": "ts"}}


def lens(field: str = "type", data_view_id: str = "ev", obj_id: str = "chart") -> dict[str, Any]:
    return {
        "type": "lens", "id": obj_id,
        "attributes": {
            "title": "t", "visualizationType": "lnsXY",
            "state": {
                "datasourceStates": {"formBased": {"layers": {"l1": {
                    "columnOrder": ["x", "n"],
                    "columns": {
                        "x": {"operationType": "terms", "sourceField": field,
                              "params": {"orderBy": {"type": "column", "columnId": "n"}}},
                        "n": {"operationType": "count", "sourceField": "___records___"},
                    }}}}},
                "visualization": {"layers": [{"layerId": "l1", "layerType": "data", "xAccessor": "x",
                                              "accessors": ["n"]}]},
                "query": {"query": "", "language": "kuery"}, "filters": [],
            },
        },
        "references": [{"type": "index-pattern", "id": data_view_id, "name": "indexpattern-datasource-layer-l1"}],
    }


def write(tmp_path: Path, *lines: dict[str, Any] | str) -> Path:
    path = tmp_path / "objects.ndjson"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return path


def problems_for(tmp_path: Path, *lines: dict[str, Any] | str) -> list[str]:
    return check_saved_objects(write(tmp_path, *lines), MAPPINGS_DIR)


def test_small_valid_file_passes(tmp_path: Path) -> None:
    assert problems_for(tmp_path, DATA_VIEW, lens()) == []


def test_bad_json_line_is_reported(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, DATA_VIEW, '{"type": "lens", "id": ', lens())
    assert len(problems) == 1
    assert problems[0].startswith("line 2: not JSON")


def test_duplicate_id_is_reported(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, DATA_VIEW, lens(), lens(field="user_id"))
    assert problems == ["line 3: duplicate lens id 'chart'"]


def test_same_id_in_two_types_is_allowed(tmp_path: Path) -> None:
    assert problems_for(tmp_path, DATA_VIEW, lens(obj_id="ev")) == []


def test_dangling_reference_is_reported(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, DATA_VIEW, lens(data_view_id="nowhere"))
    assert len(problems) == 1
    assert "'nowhere' is not in the file" in problems[0]


def test_unknown_field_is_reported(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, DATA_VIEW, lens(field="event_kind"))
    assert len(problems) == 1
    assert "'event_kind'" in problems[0] and "hybridrec-events" in problems[0]


def test_field_of_another_index_is_reported(tmp_path: Path) -> None:
    # `strategy` exists, but in reco-logs: a chart on the events data view cannot use it.
    assert len(problems_for(tmp_path, DATA_VIEW, lens(field="strategy"))) == 1


def test_bad_time_field_is_reported(tmp_path: Path) -> None:
    missing = {**DATA_VIEW, "attributes": {"title": "hybridrec-events", "timeFieldName": "timestamp"}}
    not_a_date = {**DATA_VIEW, "attributes": {"title": "hybridrec-events", "timeFieldName": "user_id"}}
    assert "'timestamp' is not in the mapping" in problems_for(tmp_path, missing)[0]
    assert "not a date" in problems_for(tmp_path, not_a_date)[0]


def test_unknown_index_is_reported(tmp_path: Path) -> None:
    view = {**DATA_VIEW, "attributes": {"title": "hybridrec-orders"}}
    assert "no mapping file orders.json" in problems_for(tmp_path, view)[0]


def test_dashboard_panel_without_reference_is_reported(tmp_path: Path) -> None:
    panels = [{"type": "lens", "panelIndex": "1", "gridData": {"x": 0, "y": 0, "w": 24, "h": 15, "i": "1"},
               "embeddableConfig": {}, "panelRefName": "panel_1"}]
    dashboard: dict[str, Any] = {"type": "dashboard", "id": "d", "references": [],
                 "attributes": {"title": "d", "panelsJSON": json.dumps(panels)}}
    problems = problems_for(tmp_path, DATA_VIEW, lens(), dashboard)
    assert problems == ["dashboard 'd': panel '1' refers to 'panel_1', which has no reference"]
    dashboard["references"] = [{"type": "lens", "id": "chart", "name": "1:panel_1"}]
    assert problems_for(tmp_path, DATA_VIEW, lens(), dashboard) == []


def test_by_value_dashboard_panel_fields_are_checked(tmp_path: Path) -> None:
    attributes = lens(field="no_such_field")["attributes"]
    panels = [{"type": "lens", "panelIndex": "p", "gridData": {"x": 0, "y": 0, "w": 24, "h": 15, "i": "p"},
               "embeddableConfig": {"attributes": attributes}}]
    dashboard = {"type": "dashboard", "id": "d", "attributes": {"title": "d", "panelsJSON": json.dumps(panels)},
                 "references": [{"type": "index-pattern", "id": "ev",
                                 "name": "p:indexpattern-datasource-layer-l1"}]}
    problems = problems_for(tmp_path, DATA_VIEW, dashboard)
    assert len(problems) == 1 and "'no_such_field'" in problems[0]


# --- import against a stand-in Kibana on 127.0.0.1 -------------------------------------------------------

class FakeKibana(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), KibanaHandler)
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.answer: bytes = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class KibanaHandler(BaseHTTPRequestHandler):
    server: FakeKibana

    def do_POST(self) -> None:  # http.server calls do_<METHOD>
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append({"method": "POST", "path": self.path, "headers": self.headers,
                                     "body": body})
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output quiet
        pass


@pytest.fixture
def kibana() -> Iterator[FakeKibana]:
    server = FakeKibana()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def multipart_files(request: dict[str, Any]) -> dict[str, tuple[str | None, bytes]]:
    """Form field name -> (file name, content) of a multipart/form-data body."""
    raw = b"Content-Type: " + request["headers"]["Content-Type"].encode() + b"\r\n\r\n" + request["body"]
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    assert message.get_content_type() == "multipart/form-data"
    files = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        content = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(content, bytes)
        files[name] = (part.get_filename(), content)
    return files


def test_import_posts_the_file_with_kbn_xsrf(kibana: FakeKibana) -> None:
    count = len(read_shipped())
    kibana.answer = json.dumps({"success": True, "successCount": count, "successResults": []}).encode()
    result = import_saved_objects(kibana.url + "/", SAVED_OBJECTS_FILE, api_key="a2V5", timeout=5)
    assert result["success"] is True and result["successCount"] == count
    (request,) = kibana.requests
    assert request["method"] == "POST"
    assert request["path"] == "/api/saved_objects/_import?overwrite=true"
    assert request["headers"]["kbn-xsrf"] == "true"
    assert request["headers"]["Authorization"] == "ApiKey a2V5"
    assert multipart_files(request) == {"file": ("hybridrec.ndjson", SAVED_OBJECTS_FILE.read_bytes())}


def test_import_into_a_space_with_basic_auth(kibana: FakeKibana) -> None:
    kibana.answer = b'{"success": true, "successCount": 9}'
    import_saved_objects(kibana.url + "/s/team", SAVED_OBJECTS_FILE, username="elastic", password="pw", timeout=5)
    (request,) = kibana.requests
    assert request["path"] == "/s/team/api/saved_objects/_import?overwrite=true"
    assert request["headers"]["Authorization"] == "Basic ZWxhc3RpYzpwdw=="  # elastic:pw


def test_import_non_2xx_raises_with_kibanas_message(kibana: FakeKibana) -> None:
    kibana.status = 400
    kibana.answer = b'{"statusCode":400,"error":"Bad Request","message":"Invalid file extension .txt"}'
    with pytest.raises(KibanaError, match=r"HTTP 400.*Invalid file extension"):
        import_saved_objects(kibana.url, SAVED_OBJECTS_FILE, timeout=5)


def test_import_partial_failure_raises(kibana: FakeKibana) -> None:
    kibana.answer = json.dumps({"success": False, "successCount": 8, "errors": [
        {"type": "lens", "id": "x", "error": {"type": "missing_references"}}]}).encode()
    with pytest.raises(KibanaError, match="missing_references"):
        import_saved_objects(kibana.url, SAVED_OBJECTS_FILE, timeout=5)


def test_import_unreachable_kibana_raises(kibana: FakeKibana) -> None:
    url = kibana.url
    kibana.shutdown()
    kibana.server_close()
    with pytest.raises(KibanaError, match="could not reach Kibana"):
        import_saved_objects(url, SAVED_OBJECTS_FILE, timeout=2)
