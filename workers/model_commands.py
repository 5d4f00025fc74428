"""`hybridrec train` and `hybridrec models ...`: train, list, promote and roll back collaborative models
(loaded through the `hybridrec.commands` entry point)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from tqdm import tqdm

from indexer.clients import make_es
from indexer.settings import get_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train a collaborative model from the events index, gate and promote it")
    p.add_argument("--sync", action="store_true", help="train in this process instead of the workers")
    p.add_argument("--no-promote", action="store_true", help="keep the model as a candidate, do not serve it")
    p.set_defaults(func=cmd_train)
    models = sub.add_parser("models", help="collaborative model versions")
    models.set_defaults(func=cmd_models_list)
    actions = models.add_subparsers(dest="action")
    actions.add_parser("list", help="versions with their metrics and state (the default)").set_defaults(
        func=cmd_models_list)
    p = actions.add_parser("promote", help="serve a trained version")
    p.add_argument("version", type=int)
    p.add_argument("--sync", action="store_true")
    p.set_defaults(func=cmd_models_promote)
    p = actions.add_parser("rollback", help="serve the version that served before the current one")
    p.add_argument("--sync", action="store_true")
    p.set_defaults(func=cmd_models_rollback)


def _bar() -> tuple[Callable[[str, float], None], tqdm[NoReturn]]:
    bar = tqdm(total=100, unit="%", disable=not sys.stderr.isatty())

    def progress(stage: str, fraction: float) -> None:
        bar.set_description(stage)
        bar.n = round(fraction * 100)
        bar.refresh()
    return progress, bar


def _wait(task: Any) -> Any:
    """Follow a task's PROGRESS states until it ends; its result (or its error, raised)."""
    while not task.ready():
        if task.state == "PROGRESS" and isinstance(task.info, dict):
            print(f"{task.info.get('stage')}: {task.info.get('progress')}", file=sys.stderr)
        time.sleep(1)
    return task.get(timeout=10)


def cmd_train(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.sync:
        from indexer import promotion, training

        es = make_es(settings, timeout=120)
        progress, bar = _bar()
        options = training.TrainOptions(min_events=settings.train_min_events, promote=not args.no_promote)
        result = training.train(es, settings, options, progress,
                                promote=lambda version: promotion.promote(es, settings, version, progress))
        bar.close()
        out = result.as_dict()
    else:
        from workers.tasks import train

        out = _wait(train.delay(not args.no_promote))
    print(json.dumps(out, indent=2))
    return 0 if out.get("state") in ("serving", "candidate", "skipped") else 1


def cmd_models_list(args: argparse.Namespace) -> int:
    from indexer import model_registry as registry

    settings = get_settings()
    es = make_es(settings)
    pointer = registry.read_pointer(es, settings)
    print(f"serving: {pointer.version} (slot {pointer.slot}); slots {pointer.slots}; "
          f"rollback goes to {pointer.history[-1] if pointer.history else None}")
    for model in registry.list_models(es, settings):
        metrics = model.info.get("metrics", {})
        shown = " ".join(f"{k}={v}" for k, v in metrics.items() if k.startswith(("ndcg", "objective")))
        print(f"v{model.version:<5d} {model.state:10s} {model.created_at[:19]} events={model.info.get('events')} "
              f"train_s={model.info.get('train_s')} {shown}  {model.reason}")
    return 0


def _model_task(name: str, sync: bool, *args: Any) -> int:
    settings = get_settings()
    if sync:
        from indexer import promotion

        es = make_es(settings, timeout=120)
        progress, bar = _bar()
        out = promotion.promote(es, settings, args[0], progress) if name == "promote" \
            else promotion.rollback(es, settings, progress)
        bar.close()
    else:
        from workers import tasks

        task = tasks.promote_model.delay(*args) if name == "promote" else tasks.rollback_model.delay()
        out = _wait(task)
    print(json.dumps(out, indent=2))
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    return _model_task("promote", args.sync, args.version)


def cmd_models_rollback(args: argparse.Namespace) -> int:
    return _model_task("rollback", args.sync)
