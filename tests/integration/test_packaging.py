"""A plain wheel of the project is self-sufficient: installed into a fresh virtualenv, away from the source
tree, `hybridrec init` creates the indices on the test node and every subcommand answers --help.

The new virtualenv reuses the test venv's site-packages for the heavy dependencies (torch and the rest)
through a .pth line; the project itself comes only from the wheel.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PREFIX, REPO, drop_test_indices

pytestmark = pytest.mark.integration

# What `pip install .` reads: the project files and the packages, nothing else of the checkout.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "indexer", "api", "workers", "eval", "mappings")
# Prints every command path of the installed CLI ([["ingest"], ["events", "replay"], ...]) as JSON.
LIST_COMMANDS = """
import argparse, json
from workers.cli import build_parser

def paths(parser, prefix):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + [name]
                yield from paths(sub, prefix + [name])

print(json.dumps(list(paths(build_parser(), []))))
"""


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the project's wheel (its folder)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    # --no-index: nothing is fetched; the build backend is the test venv's setuptools.
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", root / "dist", source, cwd=root)
    (wheel,) = (root / "dist").glob("hybridrec-*.whl")
    env = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env, cwd=root)
    # Installed before the test venv is reused below: this pip run sees no other copy of hybridrec
    # (the test venv's own editable install must not be touched).
    run(sys.executable, "-m", "pip", "--python", env / "bin" / "python", "install", "--no-deps", "--no-index", "-q",
        wheel, cwd=root)
    (site_packages,) = (env / "lib").glob("python*/site-packages")
    (site_packages / "reuse-test-venv.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    return env


@pytest.fixture(scope="module")
def cli_env() -> dict[str, str]:
    """The test settings, with an index prefix of its own and no path into the source tree."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HYBRIDREC_INDEX_PREFIX"] = f"{PREFIX}-wheel"
    return env


def test_the_wheel_carries_the_project_and_its_data(venv: Path, cli_env: dict[str, str]) -> None:
    done = run(venv / "bin" / "python", "-c",
               "import indexer, mappings; from indexer.kibana import SAVED_OBJECTS_FILE; "
               "print(indexer.__file__, mappings.__file__, SAVED_OBJECTS_FILE.is_file())", cwd=venv, env=cli_env)
    indexer_file, mappings_file, kibana = done.stdout.split()
    assert Path(indexer_file).is_relative_to(venv) and Path(mappings_file).is_relative_to(venv), done.stdout
    assert kibana == "True"


def test_init_creates_the_indices_from_the_installed_package(venv: Path, cli_env: dict[str, str], es) -> None:
    try:
        done = run(venv / "bin" / "hybridrec", "init", cwd=venv, env=cli_env)
        created = json.loads(done.stdout)
        assert created, done.stdout
        for kind in ("items", "events", "users", "reco-logs", "models"):
            assert es.indices.exists_alias(name=f"{PREFIX}-wheel-{kind}"), (kind, created)
    finally:
        drop_test_indices(es, f"{PREFIX}-wheel-*")


def test_every_subcommand_answers_help(venv: Path, cli_env: dict[str, str]) -> None:
    listed = run(venv / "bin" / "python", "-c", LIST_COMMANDS, cwd=venv, env=cli_env)
    assert "not available" not in listed.stderr, listed.stderr  # every command group loaded
    commands: list[list[str]] = json.loads(listed.stdout)
    assert {"init", "ingest", "events", "models", "train", "eval"} <= {c[0] for c in commands}, commands
    for command in [[], *commands]:
        done = run(venv / "bin" / "hybridrec", *command, "--help", cwd=venv, env=cli_env)
        assert done.stdout.startswith(f"usage: hybridrec {' '.join(command)}".rstrip()), (command, done.stdout)
        assert "not available" not in done.stderr, (command, done.stderr)
