"""`hybridrec eval` arguments and entry point: load a dataset, run the protocols, write the report."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.datasets import LIKE_THRESHOLD, Dataset, load_jsonl, load_ml100k, load_recbole_dir
from eval.protocols import PROTOCOLS
from eval.strategies import LINEAR_W_BM25, LINEAR_W_USER

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from indexer.settings import Settings

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_PREFIX = "hreval"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `hybridrec eval` command group (loaded through the `hybridrec.commands` entry point)."""
    parser = sub.add_parser("eval", help="offline evaluation of the strategies (see eval/)")
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", choices=("ml-100k", "recbole", "jsonl"), default="ml-100k",
                      help="ml-100k: read from the recbole wheel (downloaded once with pip); recbole: atomic "
                           "files <name>.inter + <name>.item in --data-dir; jsonl: --items and --events")
    data.add_argument("--cache", default=".hybridrec/datasets", help="where the recbole wheel is kept")
    data.add_argument("--data-dir", type=Path, help="directory of RecBole atomic files (--dataset recbole)")
    data.add_argument("--name", help="atomic file base name (default: the directory's name)")
    data.add_argument("--items", type=Path, help="JSONL items, one hybridrec item a line (--dataset jsonl)")
    data.add_argument("--events", type=Path, help="JSONL events: user_id, item_id, type, ts (--dataset jsonl)")
    data.add_argument("--like-threshold", type=float, default=LIKE_THRESHOLD,
                      help="RecBole ratings at or above this become likes, the others views")
    run_group = parser.add_argument_group("protocol")
    run_group.add_argument("--protocol", choices=(*PROTOCOLS, "both"), default="both")
    run_group.add_argument("--target", choices=("test", "valid"), default="test",
                           help="score the test items, or the validation items (to choose weights without "
                                "looking at test)")
    run_group.add_argument("--seed", type=int, default=2020, help="split and ALS seed")
    run_group.add_argument("--max-users", type=int, default=None, help="evaluate a seeded sample of users")
    run_group.add_argument("--linear-w-bm25", type=float, default=LINEAR_W_BM25)
    run_group.add_argument("--linear-w-user", type=float, default=LINEAR_W_USER)
    run_group.add_argument("--no-als", action="store_true", help="leave out the ALS reference")
    run_group.add_argument("--strategies", help="comma-separated strategy names to run (default: all), "
                                                "e.g. popularity,vector,latent,default for a quick look")
    run_group.add_argument("--cold-items", type=float, default=0.0, metavar="FRACTION",
                           help="hide every interaction of a seeded random FRACTION of the items (e.g. 0.1) from "
                                "the events, profiles and model, and also score every strategy on those items "
                                "alone (the 'cold items' section)")
    out = parser.add_argument_group("where")
    out.add_argument("--prefix", default=DEFAULT_PREFIX,
                     help="index prefix and Redis key prefix of the evaluation (its indices are dropped before "
                          "and after the run); must differ from HYBRIDREC_INDEX_PREFIX")
    out.add_argument("--redis-url", help="Redis for the evaluation's profiles (default: HYBRIDREC_REDIS_URL)")
    out.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory (results.json/.md/.png)")
    out.add_argument("--keep-index", action="store_true", help="leave the indices and profiles for inspection")


def load_dataset(args: argparse.Namespace) -> Dataset:
    """The dataset the arguments name, or SystemExit saying which argument is missing."""
    if args.dataset == "ml-100k":
        return load_ml100k(Path(args.cache), args.like_threshold)
    if args.dataset == "recbole":
        if not args.data_dir or not args.data_dir.is_dir():
            raise SystemExit("hybridrec eval: --dataset recbole needs --data-dir DIR holding <name>.inter and .item")
        return load_recbole_dir(args.data_dir, args.name, args.like_threshold)
    if not (args.items and args.events and args.items.is_file() and args.events.is_file()):
        raise SystemExit("hybridrec eval: --dataset jsonl needs --items FILE and --events FILE")
    return load_jsonl(args.items, args.events, args.name)


def drop_indices(es: Elasticsearch, settings: Settings) -> list[str]:
    """Delete this prefix's physical indices (named one by one: wildcard deletes are refused)."""
    from indexer.lifecycle import list_versions
    from indexer.mappings import INDEX_KINDS

    names = [v.name for kind in INDEX_KINDS for v in list_versions(es, settings, kind)]
    if names:
        es.indices.delete(index=names)
    return names


def run(args: argparse.Namespace) -> int:
    from eval.harness import EvalOptions, Harness
    from eval.report import markdown, write_all
    from eval.strategies import default_strategies
    from indexer.clients import make_es
    from indexer.encoder import get_encoder
    from indexer.settings import get_settings, load_settings

    if not logging.getLogger().handlers:
        # Progress from the harness only: the clients log every request at INFO.
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
        logging.getLogger("eval").setLevel(logging.INFO)
    if args.prefix == get_settings().index_prefix:
        raise SystemExit(f"hybridrec eval: --prefix {args.prefix} is the live prefix; the evaluation drops its "
                         f"indices, so give it its own")
    if not 0.0 <= args.cold_items < 1.0:
        raise SystemExit(f"hybridrec eval: --cold-items is a share of the items in [0, 1), got {args.cold_items}")
    started = time.perf_counter()
    dataset = load_dataset(args)
    overrides: dict[str, Any] = {"index_prefix": args.prefix}
    if args.redis_url:
        overrides["redis_url"] = args.redis_url
    settings = load_settings(**overrides)
    es = make_es(settings, timeout=60)
    drop_indices(es, settings)
    harness = Harness(settings, dataset)
    strategies = default_strategies(args.linear_w_bm25, args.linear_w_user, not args.no_als)
    if args.strategies:
        wanted = [name.strip() for name in args.strategies.split(",") if name.strip()]
        unknown = sorted(set(wanted) - {s.name for s in strategies})
        if unknown:
            raise SystemExit(f"hybridrec eval: unknown strategies {unknown}; known: {[s.name for s in strategies]}")
        strategies = [s for s in strategies if s.name in wanted]
    options = EvalOptions(target=args.target, seed=args.seed, max_users=args.max_users, strategies=strategies,
                          cold_items=args.cold_items)
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    try:
        runs = [harness.run_protocol(protocol, options) for protocol in protocols]
    finally:
        if not args.keep_index:
            drop_indices(es, settings)
            harness.clear_state()
    results = {
        "dataset": dataset.name, "items": len(dataset.items), "interactions": len(dataset.interactions),
        "dropped_interactions": dataset.dropped,
        "settings": {"model": get_encoder(settings).model_id, "half_life_days": settings.half_life_days,
                     "vector_index_type": settings.vector_index_type, "like_threshold": args.like_threshold,
                     "seed": args.seed, "linear_w_bm25": args.linear_w_bm25, "linear_w_user": args.linear_w_user,
                     "cold_items": args.cold_items},
        "protocols": runs, "wall_s": round(time.perf_counter() - started, 1),
    }
    paths = write_all(results, args.out)
    print(markdown(results))
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    return 0
