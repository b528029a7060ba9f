"""The console's DAG layout (app/console/static/dag.js), checked by its node script."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import ROOT


def test_the_dag_layout_keeps_its_guarantees() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node on PATH: the layout's own checks need it "
                    "(the browser tests still draw the DAG)")
    result = subprocess.run([node, str(ROOT / "tests/console_js/dag.test.mjs")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
