"""`hybridrec eval` arguments and entry point (filled in by the evaluation harness)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="ml-100k")


def run(args: argparse.Namespace) -> int:
    raise SystemExit("hybridrec eval: the harness is being written (see eval/)")
