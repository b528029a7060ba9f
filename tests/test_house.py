"""The house keeps its shape: floors that import only downwards, no cycle, one error
hierarchy, a short README.

`make lint` runs import-linter with the contracts in setup.cfg; these tests show that
it passes on the tree as it is and fails on the two faults it is there for (an import
up the house, a cycle), on a copy of the tree with one line added.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.errors import ChordlineError
from tasks.core.settings import CLIENT_VARS, Settings
from tests.support import ROOT

LINT = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"]


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(LINT, cwd=tree, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and the contracts, to break on purpose."""
    for package in ("app", "tasks", "workers"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    return tmp_path


def add_import(module: Path, line: str) -> None:
    text = module.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    module.write_text(head + sep + line + "\n" + rest)


def test_the_tree_keeps_its_contracts(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_import_up_the_house_fails_the_lint(tree: Path) -> None:
    # core is the floor: it may not know of the workflows above it
    add_import(tree / "tasks/core/clock.py", "import tasks.workflows.service  # noqa")
    result = lint(tree)
    assert result.returncode != 0
    assert "tasks.core is not allowed to import tasks.workflows" in result.stdout


def test_an_import_cycle_fails_the_lint(tree: Path) -> None:
    # the job store under dispatch, which imports it: a cycle inside one room
    add_import(tree / "tasks/jobs/store.py", "import tasks.jobs.dispatch  # noqa")
    result = lint(tree)
    assert result.returncode != 0
    assert "No cycles are allowed in tasks.jobs" in result.stdout


def test_the_root_of_tasks_holds_at_most_a_dozen_modules() -> None:
    modules = sorted(p.name for p in (ROOT / "tasks").glob("*.py"))
    assert len(modules) <= 12, modules
    # and every script sits in the lua/ folder of a room, none at the root
    assert not (ROOT / "tasks" / "lua").exists()


def test_the_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_settings_table_lists_every_variable_the_code_reads() -> None:
    page = (ROOT / "docs" / "production.md").read_text()
    table = page.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    first_columns = re.findall(r"^\|([^|]*)\|", table, re.M)
    documented = {name for column in first_columns for name in re.findall(r"`([A-Z_]+)`", column)}
    read = {f.metadata["env"] for f in dataclasses.fields(Settings) if "env" in f.metadata}
    # the command-line client's own two (app/client/config.py) are documented beside them
    assert documented - CLIENT_VARS == read


def test_every_error_the_code_defines_is_of_the_one_hierarchy() -> None:
    found = []
    for package in ("app", "tasks", "workers"):
        for info in pkgutil.walk_packages([str(ROOT / package)], f"{package}."):
            if info.name in {"workers.bootstrap", "app.gunicorn_conf"}:  # build a process
                continue
            module = importlib.import_module(info.name)
            found += [cls for cls in vars(module).values() if isinstance(cls, type)
                      and issubclass(cls, BaseException) and cls.__module__ == info.name]
    assert len(found) >= 20
    assert [cls for cls in found if not issubclass(cls, ChordlineError)] == []
