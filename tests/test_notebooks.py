"""House rules for the committed notebooks."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TOC = (ROOT / "_toc.yml").read_text()


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_skeleton(path):
    nb = json.loads(path.read_text())
    tags = [c.get("metadata", {}).get("tags", []) for c in nb["cells"]]
    params = [i for i, t in enumerate(tags) if "parameters" in t]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert "PROFILE" in "".join(nb["cells"][params[0]]["source"])
    last = nb["cells"][-1]
    assert last["cell_type"] == "code" and "remove-cell" in last.get("metadata", {}).get("tags", []) \
        and "assert" in "".join(last["source"]), "the last cell is a hidden check that asserts the profile's bar"
    assert "report.record(" in "".join("".join(c["source"]) for c in nb["cells"])
    assert f"notebooks/{path.stem}" in TOC, f"{path.name} is not in _toc.yml"
