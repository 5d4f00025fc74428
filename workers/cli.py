"""The `hybridrec` command: ingest, reindex, rollback, indices, profiles rebuild, demo catalog."""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from tqdm import tqdm

from indexer import keys, lifecycle
from indexer.bulk import batches
from indexer.clients import make_es
from indexer.settings import SettingsError, get_settings

PLUGIN_GROUP = "hybridrec.commands"

BATCH = 200


def _read_items(path: Path) -> Iterator[dict[str, Any]]:
    """Items from a JSONL or CSV file (CSV: tags separated by '|', numbers and booleans converted)."""
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield {"__error__": f"line {number}: not JSON ({exc.msg})"}
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                yield _csv_item(row)
    else:
        raise SystemExit(f"{path}: unsupported file type (use .jsonl or .csv)")


def _csv_item(row: dict[str, str]) -> dict[str, Any]:
    item: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "")}
    if "tags" in item:
        item["tags"] = [t.strip() for t in item["tags"].split("|") if t.strip()]
    for key in ("price", "popularity"):
        if key in item:
            try:
                item[key] = float(item[key])
            except ValueError:
                pass  # left as text: validation reports it against the item
    if "version" in item and item["version"].isdigit():
        item["version"] = int(item["version"])
    if "in_stock" in item:
        item["in_stock"] = item["in_stock"].strip().lower() in ("1", "true", "yes")
    return item


def ingest(items: Iterator[dict[str, Any]], *, sync: bool, total: int | None = None) -> dict[str, Any]:
    """Index items through the workers (default) or in this process (sync); returns the totals."""
    from indexer import catalog
    from indexer.documents import validate_items
    from indexer.encoder import get_encoder

    settings = get_settings()
    es = make_es(settings, timeout=60)
    lifecycle.ensure_indices(es, settings)
    totals: dict[str, Any] = {"accepted": 0, "invalid": [], "indexed": 0, "embedded": 0, "failed": []}
    pending = []
    offset = 0
    with tqdm(total=total, unit="item", desc="ingest", disable=not sys.stderr.isatty()) as bar:
        for batch in batches(items, BATCH):
            valid, errors = validate_items(batch, max_text_chars=settings.max_text_chars, stamp_missing=True,
                                           now=datetime.now(UTC))
            totals["invalid"].extend({**e.as_dict(), "index": e.index + offset} for e in errors)
            offset += len(batch)
            totals["accepted"] += len(valid)
            if valid and sync:
                result = catalog.index_items(es, settings, valid, get_encoder(settings))
                totals["indexed"] += result.indexed
                totals["embedded"] += result.embedded
                totals["failed"].extend(result.failed)
            elif valid:
                from workers.tasks import index_items
                pending.append(index_items.delay([i.model_dump(mode="json", exclude_none=True) for i in valid]))
            bar.update(len(batch))
        for task in tqdm(pending, unit="batch", desc="workers", disable=not sys.stderr.isatty() or not pending):
            out = task.get(timeout=3600)
            totals["indexed"] += out["indexed"]
            totals["embedded"] += out["embedded"]
            totals["failed"].extend(out["failed"])
    es.indices.refresh(index=lifecycle.alias_name(settings, "items"))
    return totals


def cmd_ingest(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    totals = ingest(_read_items(path), sync=args.sync)
    print(json.dumps({k: v if not isinstance(v, list) else v[:20] for k, v in totals.items()}
                     | {"invalid_count": len(totals["invalid"]), "failed_count": len(totals["failed"])}, indent=2))
    return 0 if not totals["failed"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from indexer.datasets import movielens_items, recbole_wheel

    items = movielens_items(recbole_wheel(Path(args.cache)))
    totals = ingest(iter(items), sync=args.sync, total=len(items))
    print(json.dumps({"catalog": "MovieLens-100K movies", "accepted": totals["accepted"],
                      "indexed": totals["indexed"], "embedded": totals["embedded"],
                      "failed": len(totals["failed"])}))
    return 0 if not totals["failed"] else 1


def cmd_reindex(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.sync:
        from indexer import catalog
        from indexer.encoder import get_encoder

        bar = tqdm(unit="doc", desc="reindex", disable=not sys.stderr.isatty())

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        result = catalog.reindex(make_es(settings, timeout=60), settings, get_encoder(settings), progress)
        bar.close()
    else:
        from workers.tasks import reindex

        task = reindex.delay()
        while not task.ready():
            state: str = task.state  # beside Celery's own states, the task reports PROGRESS
            if state == "PROGRESS" and isinstance(task.info, dict):
                print(f"reindex: {task.info.get('done')}/{task.info.get('total')}", file=sys.stderr)
            time.sleep(1)
        result = task.get(timeout=10)
    print(json.dumps(result, indent=2))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from indexer.encoder import get_encoder
    from indexer.rollback import rollback

    settings = get_settings()
    print(json.dumps(rollback(make_es(settings, timeout=60), settings, get_encoder(settings))))
    return 0


def cmd_indices(args: argparse.Namespace) -> int:
    settings = get_settings()
    es = make_es(settings)
    from indexer.mappings import INDEX_KINDS

    for kind in INDEX_KINDS:
        for v in lifecycle.list_versions(es, settings, kind):
            flags = ",".join(f for f, on in (("current", v.is_current), ("building", v.is_building)) if on)
            retired = "" if v.retired_ms is None else \
                f" live until {datetime.fromtimestamp(v.retired_ms / 1000, UTC).isoformat(timespec='seconds')}"
            print(f"{v.name:40s} docs={v.docs:<10d} {flags}{retired}".rstrip())
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    settings = get_settings()
    print(json.dumps(lifecycle.ensure_indices(make_es(settings), settings)))
    return 0


def cmd_profiles_rebuild(args: argparse.Namespace) -> int:
    from indexer.profile_maintenance import rebuild_profiles

    settings = get_settings()
    print(json.dumps(rebuild_profiles(make_es(settings, timeout=60), settings)))
    return 0


def cmd_profiles_migrate_keys(args: argparse.Namespace) -> int:
    from indexer.profile_maintenance import migrate_untagged_keys

    print(json.dumps(migrate_untagged_keys(get_settings())))
    return 0


def cmd_profiles_snapshot(args: argparse.Namespace) -> int:
    from indexer.profile_maintenance import snapshot_profiles

    settings = get_settings()
    print(json.dumps(snapshot_profiles(make_es(settings, timeout=60), settings)))
    return 0


def cmd_events_replay(args: argparse.Namespace) -> int:
    """Send dead-lettered event batches (writes that exhausted their retries) to the workers again. Events
    that can never be written (they fail validation) go to the quarantine list instead, so that replay
    never loops on them; the worker quarantines what Elasticsearch refuses for good."""
    from indexer.clients import make_redis, reply_bytes
    from indexer.events import replayable
    from workers.tasks import quarantine, record_events

    settings = get_settings()
    redis = make_redis(settings)
    key = keys.key(settings.index_prefix, keys.EVENTS_DEAD_LETTER)
    sent = events = quarantined = 0
    while (raw := redis.lpop(key)) is not None:
        entry = json.loads(reply_bytes(raw))
        keep, never = replayable(entry.get("events") or [])
        for doc, reason in never:
            quarantine([doc], f"not replayable: {reason}")
        quarantined += len(never)
        if keep:
            record_events.delay(keep)
            sent += 1
            events += len(keep)
    held = redis.llen(keys.key(settings.index_prefix, keys.EVENTS_QUARANTINE))
    print(json.dumps({"batches": sent, "events": events, "quarantined": quarantined, "quarantine_total": held}))
    return 0


def cmd_events_import(args: argparse.Namespace) -> int:
    """Stream past interactions into the events index (idempotent: ids derive from the events' content)."""
    from indexer.history_import import import_events

    settings = get_settings()
    path = Path(args.file)
    if path.suffix.lower() == ".csv":
        handle = path.open(encoding="utf-8", newline="")
        rows: Iterator[dict[str, Any]] = (dict(row) for row in csv.DictReader(handle))
    else:
        rows = _read_items(path)
    bar = tqdm(unit="event", desc="import", disable=not sys.stderr.isatty())
    result = import_events(make_es(settings, timeout=60), settings, rows, progress=bar.update,
                           rebuild=not args.no_rebuild)
    bar.close()
    print(json.dumps(result, indent=2))
    return 0 if not result["failed_count"] else 1


def cmd_users(args: argparse.Namespace) -> int:
    """Export or erase one user's data (the same code as GET /v1/users/{id}/export and DELETE /v1/users/{id})."""
    from indexer import privacy
    from indexer.clients import make_redis

    settings = get_settings()
    run = privacy.erase_user if args.action == "delete" else privacy.export_user
    print(json.dumps(run(make_es(settings, timeout=60), make_redis(settings), settings, args.user_id), indent=2))
    return 0


def cmd_report_ctr(args: argparse.Namespace) -> int:
    from indexer.clients import make_redis
    from indexer.reco_logs import ctr_by_strategy, flush_logs

    settings = get_settings()
    es = make_es(settings, timeout=60)
    flush_logs(es, make_redis(settings), settings)
    rows = ctr_by_strategy(es, settings)
    print(json.dumps(rows, indent=2))
    return 0


def cmd_kibana_import(args: argparse.Namespace) -> int:
    from indexer.kibana import SAVED_OBJECTS_FILE, KibanaError, import_saved_objects

    try:
        result = import_saved_objects(args.url, SAVED_OBJECTS_FILE, api_key=args.api_key, username=args.username,
                                      password=args.password, ca_cert=args.ca_cert, timeout=args.timeout)
    except KibanaError as exc:
        print(f"hybridrec: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"imported": result.get("successCount", 0)}))
    return 0


def cmd_encoder_export(args: argparse.Namespace) -> int:
    from indexer.onnx_encoder import OnnxExportMissing, export, read_manifest

    settings = get_settings()
    out = Path(args.dir) if args.dir else settings.onnx_dir
    if not args.force:
        try:
            print(json.dumps({"exported": False, "dir": str(out), **read_manifest(settings.model, out)}))
            return 0  # an export of these very weights is there already
        except OnnxExportMissing:
            pass
    print(json.dumps({"exported": True, "dir": str(out), **export(settings.model, out)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ingest", help="index items from a JSONL or CSV file")
    p.add_argument("file")
    p.add_argument("--sync", action="store_true", help="embed and index in this process instead of the workers")
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("demo", help="load the MovieLens-100K movies as a demo catalog")
    p.add_argument("--cache", default=".hybridrec/datasets", help="where the recbole wheel is kept")
    p.add_argument("--sync", action="store_true")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("reindex", help="build the next items version and swap the alias")
    p.add_argument("--sync", action="store_true")
    p.set_defaults(func=cmd_reindex)
    p = sub.add_parser("rollback", help="back to the version live before, with the writes made since")
    p.set_defaults(func=cmd_rollback)
    sub.add_parser("indices", help="list index versions, alias targets and counts").set_defaults(func=cmd_indices)
    sub.add_parser("init", help="create the indices and aliases if missing").set_defaults(func=cmd_init)
    encoder = sub.add_parser("encoder", help="the ONNX encoder").add_subparsers(dest="action", required=True)
    p = encoder.add_parser("export", help="export the model to ONNX (fp32 and int8) for the torch-free encoder")
    p.add_argument("--dir", help="target folder (default HYBRIDREC_ONNX_DIR)")
    p.add_argument("--force", action="store_true", help="export again even if an export of these weights exists")
    p.set_defaults(func=cmd_encoder_export)
    profiles = sub.add_parser("profiles", help="user profiles").add_subparsers(dest="action", required=True)
    profiles.add_parser("rebuild", help="rebuild every profile from the events index").set_defaults(
        func=cmd_profiles_rebuild)
    profiles.add_parser("snapshot", help="copy Redis profiles into the users index (Kibana)").set_defaults(
        func=cmd_profiles_snapshot)
    profiles.add_parser("migrate-keys", help="move per-user Redis keys to their hash-tagged names (upgrade)"
                        ).set_defaults(func=cmd_profiles_migrate_keys)
    events = sub.add_parser("events", help="event maintenance").add_subparsers(dest="action", required=True)
    events.add_parser("replay", help="re-send dead-lettered event batches to the workers").set_defaults(
        func=cmd_events_replay)
    p = events.add_parser("import", help="import past events (JSONL or CSV, original ts), then rebuild profiles")
    p.add_argument("file")
    p.add_argument("--no-rebuild", action="store_true", help="write the events only; rebuild profiles later")
    p.set_defaults(func=cmd_events_import)
    users = sub.add_parser("users", help="one user's data").add_subparsers(dest="action", required=True)
    for action, text in (("export", "print everything held about the user, as JSON"),
                         ("delete", "erase everything held about the user; prints counts per store")):
        p = users.add_parser(action, help=text)
        p.add_argument("user_id")
        p.set_defaults(func=cmd_users)
    report = sub.add_parser("report", help="reports from the logs").add_subparsers(dest="action", required=True)
    report.add_parser("ctr", help="click-through rate of served lists per strategy").set_defaults(func=cmd_report_ctr)
    kibana = sub.add_parser("kibana", help="Kibana saved objects").add_subparsers(dest="action", required=True)
    p = kibana.add_parser("import", help="import the data views and the overview dashboard")
    p.add_argument("--url", default="http://127.0.0.1:5601")
    p.add_argument("--api-key")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--ca-cert")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_kibana_import)
    load_plugins(sub)
    return parser


def load_plugins(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> list[str]:
    """Add the command groups other packages register under the `hybridrec.commands` entry point (the
    evaluation is one). A group that fails to load is reported and left out; the rest still work."""
    loaded = []
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()(sub)
        except Exception as exc:  # any broken plugin must not take the whole CLI down
            print(f"hybridrec: command group {entry.name!r} not available ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            continue
        loaded.append(entry.name)
    return loaded


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"hybridrec: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
