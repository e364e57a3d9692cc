"""House rules for the committed notebooks."""

import ast
import json
import re
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


# --- the chapter skeleton -----------------------------------------------------------------------
#
# Every chapter reads the same way, and its headings are real headings, so they show in the page's
# table of contents: `# title`, `## Overview` (objectives; for a study its source paper, cited),
# `## Prerequisites`, `## Time to run` (one row per profile), the parameters cell, the imports
# cell, the chapter's own `##` sections, then `## Summary`, `### What's next` (and `### Exercises`).
# Checked on the JSON alone, without running anything.

BIB_KEYS = set(re.findall(r"^@\w+\{([^,\s]+),", (ROOT / "book" / "references.bib").read_text(), re.M))
TIME_HEADING = "## Time to run"
FRONT = ("## Overview", "## Prerequisites", TIME_HEADING)
BACK = ("## Summary", "### What's next")
CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")


def _text(cell) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def _headings(text: str) -> list[str]:
    """The ATX headings of a markdown cell, outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            out.append(line.strip())
    return out


def top_level_imports(source: str) -> list[str]:
    """The import statements at a code cell's top level (IPython %magic and !shell lines dropped)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return [ast.unparse(node) for node in ast.parse(code).body if isinstance(node, (ast.Import, ast.ImportFrom))]


def skeleton_problems(path: Path, bib_keys=BIB_KEYS) -> list[str]:
    """What is wrong with the chapter skeleton of the notebook at `path` ([] when nothing)."""
    nb = json.loads(Path(path).read_text())
    cells, problems = nb["cells"], []
    if not cells or cells[0]["cell_type"] != "markdown" or not _text(cells[0]).startswith("# "):
        problems.append("the first cell must be markdown that starts with the title, '# ...'")
    # the outline: headings and the two special code cells, in cell order
    outline, code_cells = [], [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    params = [i for i in code_cells if "parameters" in cells[i].get("metadata", {}).get("tags", [])]
    imports = None
    if len(params) != 1:
        problems.append(f"exactly one code cell must be tagged 'parameters', found {len(params)}")
    else:
        later = [i for i in code_cells if i > params[0]]
        if code_cells[0] != params[0]:
            problems.append("the parameters cell must be the first code cell")
        if not later or "from sashelpers" not in _text(cells[later[0]]):
            problems.append("the code cell after the parameters cell must be the imports cell ('from sashelpers ...')")
        else:
            imports = later[0]
    for i, c in enumerate(cells):
        if c["cell_type"] == "markdown":
            outline += [(i, h) for h in _headings(_text(c))]
        elif i in params:
            outline.append((i, "<parameters>"))
        elif i == imports:
            outline.append((i, "<imports>"))
    names = [h for _, h in outline]
    if sum(h.startswith("# ") for h in names) != 1:
        problems.append("exactly one level-1 heading (the title)")
    for h in FRONT + BACK:
        if h not in names:
            problems.append(f"no heading {h!r}")
    order = [h for h in FRONT + ("<parameters>", "<imports>") + BACK if h in names]
    seen = [h for h in names if h in order]
    if [h for i, h in enumerate(seen) if h not in seen[:i]] != order:
        problems.append(f"the skeleton is out of order: {seen}; expected {list(FRONT)}, the parameters and "
                        f"imports cells, ..., {list(BACK)}")
    if "<parameters>" in names:
        stray = [h for h in names[:names.index("<parameters>")] if h.startswith("## ") and h not in FRONT]
        if stray:
            problems.append(f"sections {stray} come before the parameters cell; they belong after the imports")
    if "## Summary" in names:
        after = [h for h in names[names.index("## Summary") + 1:] if re.match(r"#{1,2} ", h)]
        if after:
            problems.append(f"sections {after} come after '## Summary'; it closes the chapter")
    for i in code_cells:
        if i in params or i == imports:
            continue
        try:
            found = top_level_imports(_text(cells[i]))
        except SyntaxError as err:
            problems.append(f"code cell {i} does not parse: {err}")
            continue
        if found:
            problems.append(f"code cell {i} imports {found}: move them into the imports cell")
    dirty = [i for i in code_cells if cells[i].get("outputs") or cells[i].get("execution_count") is not None]
    if dirty:
        problems.append(f"code cells {dirty} carry outputs or execution counts")
    # citations: every key in the bibliography; a study (01 onward) cites its paper in its Overview
    markdown = "\n".join(_text(c) for c in cells if c["cell_type"] == "markdown")
    keys = [k.strip() for m in CITE.finditer(markdown) for k in m.group(1).split(",")]
    unknown = sorted({k for k in keys if k not in bib_keys})
    if unknown:
        problems.append(f"cited keys {unknown} are not in book/references.bib")
    if Path(path).name[:2].isdigit() and int(Path(path).name[:2]) >= 1:
        overview = re.search(r"^## Overview\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
        cited = [k.strip() for m in CITE.finditer(overview.group(1) if overview else "") for k in m.group(1).split(",")]
        if not any(k in bib_keys for k in cited):
            problems.append("a study's Overview must {cite} its source paper (a key of book/references.bib)")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_skeleton(path):
    problems = skeleton_problems(path)
    assert not problems, f"{path.name}:\n- " + "\n- ".join(problems)


def _tiny_notebook(tmp_path, drop=None, extra_code=None, cite="liu2019gisaxs"):
    """A minimal study notebook that follows the skeleton; `drop` removes the markdown cell with
    that heading, `extra_code` adds a code cell before the summary."""
    nbformat = pytest.importorskip("nbformat")
    v4 = nbformat.v4
    overview = f"## Overview\n\nAfter {{cite:t}}`{cite}`.\n\nYou will learn to:\n- test"
    cells = [v4.new_markdown_cell(f"# 09 · A test\n\n{overview}"),
             v4.new_markdown_cell("## Prerequisites\n\n| prerequisite | where |\n| --- | --- |\n| none | — |"),
             v4.new_markdown_cell(f"{TIME_HEADING}\n\n| profile | time |\n| --- | --- |\n| `quick` | 1 s |"),
             v4.new_code_cell('import os\n\nPROFILE = os.environ.get("SASHELPERS_PROFILE", "standard")',
                              metadata={"tags": ["parameters"]}),
             v4.new_code_cell("import numpy as np\n\nfrom sashelpers.core import report"),
             v4.new_markdown_cell("## A section"),
             v4.new_code_cell("%matplotlib inline\nx = np.arange(3)\n\ndef f():\n    import math  # nested: fine\n"
                              "    return math.pi"),
             *([v4.new_code_cell(extra_code)] if extra_code else []),
             v4.new_markdown_cell("## Summary\n\n- it works"),
             v4.new_markdown_cell("### What's next\n\nNothing."),
             v4.new_markdown_cell("### Exercises\n\n1. None.")]
    cells = [c for c in cells if drop is None or not c["source"].startswith(drop)]
    path = tmp_path / "09_test.ipynb"
    nbformat.write(v4.new_notebook(cells=cells), path)
    return path


def test_skeleton_checker_accepts_a_good_notebook(tmp_path):
    assert skeleton_problems(_tiny_notebook(tmp_path)) == []


@pytest.mark.parametrize("kwargs, expected", [
    ({"drop": "## Summary"}, "no heading '## Summary'"),
    ({"drop": "### What's next"}, "no heading \"### What's next\""),
    ({"drop": TIME_HEADING}, f"no heading {TIME_HEADING!r}"),
    ({"extra_code": "from sashelpers.learn import nets\nnets"}, "move them into the imports cell"),
    ({"cite": "no_such_key"}, "not in book/references.bib"),
], ids=["no-summary", "no-whats-next", "no-time", "late-import", "unknown-cite"])
def test_skeleton_checker_reports_a_broken_notebook(tmp_path, kwargs, expected):
    problems = skeleton_problems(_tiny_notebook(tmp_path, **kwargs))
    assert any(expected in p for p in problems), problems


def test_skeleton_checker_reports_order_and_outputs(tmp_path):
    path = _tiny_notebook(tmp_path)
    nb = json.loads(path.read_text())
    nb["cells"][0], nb["cells"][1] = nb["cells"][1], nb["cells"][0]  # Prerequisites before the title
    nb["cells"][4]["execution_count"] = 3
    path.write_text(json.dumps(nb))
    problems = skeleton_problems(path)
    assert any("first cell" in p for p in problems) and any("out of order" in p for p in problems) \
        and any("execution counts" in p for p in problems), problems
