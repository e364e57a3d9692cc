"""The package's layers: every import inside ``sashelpers`` goes to the same layer or one below.

core -> physics -> measured -> learn -> studies (each may import the ones before it). Inside
``studies`` a study module imports no other study module, except the pairs in ``STUDY_EDGES``.
Function-level imports count as much as top-level ones.
"""

import ast
from pathlib import Path

import pytest

import sashelpers

LAYERS = ("core", "physics", "measured", "learn", "studies")
STUDY_EDGES = {("bayes_shapes", "inn_scatterers"),  # study 1's likelihood uses study 1's priors
               ("gisaxs_dae", "gisaxs_cnn")}  # study 4 denoises study 3's images for study 3's CNN


def _imports(path: Path, package: str):
    """(line, imported module as a dotted name) for every import in the file at ``path``,
    whose own dotted module name is ``package``.<stem>."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parts = package.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:  # a module or a name in one: either way, below ``mod``
                yield node.lineno, f"{mod}.{alias.name}"


def violations(root: Path) -> list[str]:
    """Every import in the package at ``root`` that breaks the layering, as 'file:line: message'."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        own = list(rel.parts)
        if own[-1] == "__init__":
            own = own[:-1]
        package = ".".join(own[:-1]) if path.name != "__init__.py" else ".".join(own)
        if len(own) < 2 or own[1] not in LAYERS:
            if len(own) >= 2:
                found.append(f"{path}: module outside the layers {LAYERS}")
            continue
        layer = LAYERS.index(own[1])
        for line, target in _imports(path, package if path.name != "__init__.py" else package + ".x"):
            t = target.split(".")
            if t[0] != root.name or len(t) < 2:
                continue
            if t[1] not in LAYERS:
                found.append(f"{path}:{line}: imports {target}, which is in no layer")
                continue
            if LAYERS.index(t[1]) > layer:
                found.append(f"{path}:{line}: {own[1]} imports {target} from the higher layer {t[1]}")
            elif own[1] == t[1] == "studies" and len(t) > 2 and len(own) > 2 and t[2] != own[2] \
                    and (own[2], t[2]) not in STUDY_EDGES:
                found.append(f"{path}:{line}: study {own[2]} imports study {t[2]}")
    return found


def test_the_package_keeps_its_layers():
    root = Path(sashelpers.__file__).parent
    assert {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")} == set(LAYERS)
    assert violations(root) == []


def _package(tmp_path, files: dict) -> Path:
    root = tmp_path / "sashelpers"
    for name, text in {"__init__.py": "", **{f"{layer}/__init__.py": "" for layer in LAYERS}, **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("files, message", [
    ({"core/a.py": "from ..physics import saxs\n"}, "core imports sashelpers.physics.saxs from the higher layer"),
    ({"physics/k.py": "def f():\n    from ..learn.nets import build\n"}, "from the higher layer learn"),
    ({"learn/m.py": "import sashelpers.studies.x\n"}, "from the higher layer studies"),
    ({"measured/io.py": "from sashelpers.learn import training\n"}, "from the higher layer learn"),
    ({"studies/one.py": "from . import two\n", "studies/two.py": ""}, "study one imports study two"),
    ({"odd.py": ""}, "outside the layers"),
])
def test_the_check_fails_on_a_broken_package(tmp_path, files, message):
    found = violations(_package(tmp_path, files))
    assert len(found) == 1 and message in found[0], found


def test_the_check_passes_downward_imports(tmp_path):
    ok = {"core/a.py": "import numpy\nfrom . import b\n", "core/b.py": "",
          "physics/k.py": "from ..core import a\nfrom . import j\n", "physics/j.py": "",
          "studies/bayes_shapes.py": "from . import inn_scatterers\nfrom ..learn import inn\n",
          "studies/inn_scatterers.py": "from sashelpers.physics import k\n"}
    assert violations(_package(tmp_path, ok)) == []


def test_every_module_attribute_the_package_uses_exists():
    """``module.name`` inside the package, where ``module`` is an imported sashelpers module, must
    name something that module defines (catches references left behind when code moves)."""
    import importlib

    root = Path(sashelpers.__file__).parent
    missing = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("").parts
        package = ".".join(rel[:-1])
        tree = ast.parse(path.read_text())
        modules = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([node.module] if node.module else []))
                for alias in node.names:
                    try:
                        modules[alias.asname or alias.name] = importlib.import_module(f"{base}.{alias.name}")
                    except ImportError:
                        pass
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                mod = modules[node.value.id]
                if mod.__name__.startswith("sashelpers") and not hasattr(mod, node.attr):
                    missing.append(f"{path.name}:{node.lineno}: {mod.__name__} has no {node.attr}")
    assert missing == []
