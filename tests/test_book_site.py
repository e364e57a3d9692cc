"""The book's site configuration: MathJax served by the site itself, the repository section, a
table of contents that lists every chapter, docstrings the API reference can render, and (when
a site has been built) HTML that loads MathJax from the site and nothing from a CDN. A few
seconds, most of it importing the package."""

import importlib
import inspect
import io
import pkgutil
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()
SPHINX = (CONFIG.get("sphinx") or {}).get("config") or {}

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# book/*.md pages that are not chapters: templates (and anything private, _name.md)
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.md")
                  if not p.name.startswith("_") and "template" not in p.stem.lower())

# where `make book-check` (--path-output _build/check) and `make book` (--path-output .) put the site
SITES = [ROOT / "_build/check/_build/html", ROOT / "_build/html"]


def toc_files(toc=TOC):
    """Every `file:` entry of the ToC (root included), without suffix."""
    found = [toc["root"]] if "root" in toc else []
    for key in ("parts", "chapters", "sections"):
        for entry in toc.get(key) or []:
            if "file" in entry:
                found.append(entry["file"])
            found += [f for f in toc_files(entry) if f != entry.get("root")]
    return [re.sub(r"\.(md|ipynb)$", "", f) for f in found]


# --- configuration ------------------------------------------------------------------------------

def test_mathjax_path_points_into_the_site():
    path = SPHINX.get("mathjax_path")
    assert path, "_config.yml: sphinx.config.mathjax_path is not set, so Sphinx loads MathJax from a CDN"
    assert "://" not in path and not path.startswith("//"), f"mathjax_path={path!r} is a URL, not a file of the site"
    assert not path.startswith("/"), f"mathjax_path={path!r} must be relative (Sphinx resolves it against _static)"
    assert path.endswith(".js")


def test_mathjax_is_staged_where_mathjax_path_expects_it():
    # the Makefile unpacks MathJax's es5 build into <staged source>/_vendor/mathjax; html_static_path
    # copies _vendor's content into _static, so mathjax_path must start with mathjax/
    path = SPHINX["mathjax_path"]
    assert "_vendor" in SPHINX.get("html_static_path", []), "html_static_path must include _vendor"
    assert path.split("/")[0] == "mathjax", f"mathjax_path={path!r}: the Makefile stages MathJax as _static/mathjax/"
    parts = re.search(r"^MATHJAX_PARTS\s*:=(.*)$", MAKEFILE, re.M)
    assert parts and path.split("/", 1)[1] in parts.group(1).split(), \
        f"the Makefile's MATHJAX_PARTS does not unpack {path.split('/', 1)[1]}"
    for target in ("book", "book-check"):
        recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
        assert recipe and "stage-mathjax" in recipe.group(1), f"make {target} does not stage MathJax"


def test_repository_section():
    repo = CONFIG.get("repository") or {}
    assert repo.get("url") == "https://github.com/sas-ml-book/sas-ml-book"
    assert repo.get("branch") == "main"
    assert repo.get("path_to_book") == ""


# --- table of contents ---------------------------------------------------------------------------

def test_every_notebook_is_in_the_toc():
    assert NOTEBOOKS, "no notebooks found"
    listed = set(toc_files())
    missing = [p.name for p in NOTEBOOKS if f"notebooks/{p.stem}" not in listed]
    assert not missing, f"_toc.yml does not list {missing}"


def test_every_book_chapter_is_in_the_toc():
    listed = set(toc_files())
    missing = [p.name for p in CHAPTERS if f"book/{p.stem}" not in listed]
    assert not missing, f"_toc.yml does not list {missing}"


def test_every_toc_entry_exists():
    missing = [f for f in toc_files()
               if not any((ROOT / f"{f}{suffix}").is_file() for suffix in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_parts_are_numbered():
    parts = TOC.get("parts") or []
    assert parts, "_toc.yml has no parts"
    unnumbered = [p.get("caption") for p in parts if p.get("numbered") is not True]
    assert not unnumbered, f"parts without `numbered: true`: {unnumbered}"


# --- docstrings of the API reference (book/api.md) ---------------------------------------------------

# the subpackages book/api.md documents; `make book-check` builds with -W, so one docstring that is
# not valid reStructuredText (e.g. |q| read as a substitution) fails the book. This finds it in seconds.
API_PACKAGES = ["sashelpers.physics", "sashelpers.measured", "sashelpers.learn", "sashelpers.core"]
API_MODULES = [f"{pkg}.{m.name}" for pkg in API_PACKAGES
               for m in pkgutil.iter_modules([str(ROOT / pkg.replace(".", "/"))])
               if not m.name.startswith("_")]


def test_api_page_documents_the_subpackages():
    text = (ROOT / "book/api.md").read_text()
    block = re.search(r"```\{eval-rst\}\n(.*?)```", text, re.S)
    assert block and "autosummary::" in block.group(1) and ":recursive:" in block.group(1)
    listed = set(re.findall(r"^\s+(sashelpers\.[\w.]+)\s*$", block.group(1), re.M))
    assert listed == set(API_PACKAGES), f"book/api.md's autosummary lists {sorted(listed)}"


def _public_docstrings(module):
    """(name, what, docstring) of what autodoc documents with members: public, defined here."""
    yield module.__name__, "module", inspect.getdoc(module)
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            yield f"{module.__name__}.{name}", "class", inspect.getdoc(obj)
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                    yield f"{module.__name__}.{name}.{attr}", "method", member.__doc__ and inspect.cleandoc(member.__doc__)
        elif inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", "function", inspect.getdoc(obj)


@pytest.mark.parametrize("modname", API_MODULES)
def test_docstrings_are_restructuredtext(modname):
    docutils_core = pytest.importorskip("docutils.core")
    napoleon = pytest.importorskip("sphinx.ext.napoleon")
    config = napoleon.Config(napoleon_google_docstring=False, napoleon_numpy_docstring=True,
                             napoleon_use_ivar=True)
    problems = []
    for name, what, doc in _public_docstrings(importlib.import_module(modname)):
        if not doc:
            continue
        rst = str(napoleon.NumpyDocstring(doc, config, what=what))
        stream = io.StringIO()  # docutils reports WARNING and above here, one "<string>:line: ..." each
        docutils_core.publish_doctree(rst, settings_overrides={
            "report_level": 2, "halt_level": 5, "warning_stream": stream})
        for line in stream.getvalue().splitlines():
            # Sphinx's roles and directives (:func:, .. math::) are unknown to bare docutils
            if line.startswith("<string>:") and "Unknown interpreted text role" not in line \
                    and "Unknown directive type" not in line:
                problems.append(f"{name}: docstring {line.removeprefix('<string>')}")
    assert not problems, ("docstrings that break the API reference (quote formulas as ``|q|`` or "
                          "put them in a literal block after ::):\n" + "\n".join(problems))


# --- the built site (skipped where no site has been built) ------------------------------------------

class _Assets(HTMLParser):
    """The scripts and stylesheets a page loads."""

    def __init__(self):
        super().__init__()
        self.scripts, self.stylesheets = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        elif tag == "link" and "stylesheet" in (a.get("rel") or "").split() and a.get("href"):
            self.stylesheets.append(a["href"])


def _is_remote(url):
    return "://" in url or url.startswith("//")


@pytest.fixture(scope="module", params=SITES, ids=lambda p: str(p.relative_to(ROOT)))
def site(request):
    if not (request.param / "index.html").is_file():
        pytest.skip(f"no built site in {request.param.relative_to(ROOT)} (make book-check)")
    pages = {}
    for page in sorted(request.param.rglob("*.html")):
        parser = _Assets()
        parser.feed(page.read_text(errors="replace"))
        pages[page] = parser
    return request.param, pages


def test_site_loads_mathjax_from_itself(site):
    html_root, pages = site
    with_math = {p: [s for s in a.scripts if "mathjax" in s.lower()] for p, a in pages.items()}
    with_math = {p: s for p, s in with_math.items() if s}
    assert with_math, "no page loads MathJax (background.md has equations)"
    for page, scripts in with_math.items():
        for src in scripts:
            where = page.relative_to(html_root)
            assert not _is_remote(src), f"{where} loads MathJax from {src}"
            target = (page.parent / src.split("?")[0]).resolve()
            assert target.is_file(), f"{where} loads {src}, which is not in the site"
            assert html_root.resolve() in target.parents


def test_site_loads_no_script_or_stylesheet_from_the_network(site):
    html_root, pages = site
    remote = sorted({(str(p.relative_to(html_root)), u) for p, a in pages.items()
                     for u in a.scripts + a.stylesheets if _is_remote(u)})
    assert not remote, f"pages load from the network: {remote[:5]}"
