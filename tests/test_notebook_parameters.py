"""Every notebook's parameters cell reads the same to papermill as to Python.

The plan runner parses the cell as Python (``reports.plans.notebook_parameters``), but a user who
asks papermill (``papermill --help-notebook``, ``papermill.inspect_notebook``) gets its line
parser, which skips a line holding a second "=" (a comment such as ">= 3") with a warning: the
parameter is then missing from the help. This test holds each notebook to the names Python assigns.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import papermill
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _assigned(path: Path) -> set[str]:
    """Names assigned at top level in the cell tagged ``parameters``, by Python's own parser."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    (cell,) = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    tree = ast.parse("".join(cell["source"]))
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_sees_every_parameter(path):
    assert set(papermill.inspect_notebook(str(path))) == _assigned(path)
