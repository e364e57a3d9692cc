# The SAS-ML book. Main targets: `make book` (execute and publish) and `make test`.
# Both create .venv on first use; nothing else needs to be installed by hand.

PYTHON   ?= python3
PROFILE  ?= standard
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
STAGE    := _build/src
RESULTS  := _build/results
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# MathJax 3, served by the site itself (no CDN): the npm package's tarball is fetched once into
# .cache/npm (git-ignored, kept by `make clean`) and its browser build unpacked into each staged
# source as _vendor/mathjax, which _config.yml serves as _static/mathjax (mathjax_path).
MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256  := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX_TGZ     := .cache/npm/mathjax-$(MATHJAX_VERSION).tgz
# tex-chtml.js and what it loads at run time: TeX extensions (autoload), the CHTML fonts, and
# the menu's accessibility components with the speech-rule engine (loaded on demand)
MATHJAX_PARTS   := tex-chtml.js input output/chtml ui a11y sre

export PYTHONUNBUFFERED := 1

.PHONY: book test test-package test-notebooks book-check lab bench clean

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned install pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[book,dev]"
	# BornAgain, the peer the GISAXS kernel is checked against; --no-deps skips vtk (566 MB),
	# which it needs only for 3D views
	$(BIN)/python -m pip install -q --no-deps bornagain==25.0.0
	touch $@

# The MathJax tarball from the npm registry (npm checks its integrity; the sha256 pins the
# exact file). Without npm, the same tarball is fetched by URL. Written under a temporary name
# first, so an interrupted download is never taken for the cache.
$(MATHJAX_TGZ):
	rm -rf $@.part && mkdir -p $@.part
	if command -v npm >/dev/null; then \
	  npm pack --silent --pack-destination $@.part mathjax@$(MATHJAX_VERSION) >/dev/null; \
	else \
	  $(PYTHON) -c 'import sys, urllib.request; urllib.request.urlretrieve(*sys.argv[1:])' \
	    https://registry.npmjs.org/mathjax/-/mathjax-$(MATHJAX_VERSION).tgz \
	    $@.part/mathjax-$(MATHJAX_VERSION).tgz; \
	fi
	echo "$(MATHJAX_SHA256)  $@.part/mathjax-$(MATHJAX_VERSION).tgz" | sha256sum -c --quiet
	mv $@.part/mathjax-$(MATHJAX_VERSION).tgz $@ && rmdir $@.part

# $(call stage-mathjax,SRC): unpack MathJax's browser build into the staged source SRC.
stage-mathjax = mkdir -p $(1)/_vendor/mathjax && \
  tar -xzf $(MATHJAX_TGZ) -C $(1)/_vendor/mathjax --strip-components=2 \
    $(addprefix package/es5/,$(MATHJAX_PARTS)) && \
  tar -xzf $(MATHJAX_TGZ) -O package/LICENSE > $(1)/_vendor/mathjax/LICENSE

## book: execute every notebook with papermill (PROFILE=quick|standard|paper) into _build/src,
## render the scorecard from the results records, and build the HTML site in _build/html.
book: $(STAMP) $(MATHJAX_TGZ)
	rm -rf $(STAGE) && mkdir -p $(STAGE)/notebooks $(RESULTS)
	cp -r _config.yml _toc.yml book $(STAGE)/
	$(call stage-mathjax,$(STAGE))
	@failed=""; for nb in $(NOTEBOOKS); do \
	  echo "== papermill $$nb (profile $(PROFILE))"; \
	  SASHELPERS_PROFILE=$(PROFILE) SASHELPERS_STATIC=1 SASHELPERS_RESULTS=$(CURDIR)/$(RESULTS) \
	    $(BIN)/papermill $$nb $(STAGE)/$$nb -p PROFILE $(PROFILE) --cwd notebooks --progress-bar \
	    || failed="$$failed $$nb"; \
	done; \
	$(BIN)/python -m sashelpers.core.report scorecard --page book/scorecard.md \
	  --out $(STAGE)/book/scorecard.md --results $(RESULTS); \
	$(BIN)/jupyter-book build $(STAGE) --path-output . -W --keep-going || failed="$$failed jupyter-book"; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi; \
	echo "Book: $(CURDIR)/_build/html/index.html"

## test: package tests, every notebook at the quick profile (nbval), and the book's structure.
test: $(STAMP) test-package test-notebooks book-check

test-package: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-notebooks: $(STAMP)
	SASHELPERS_PROFILE=quick SASHELPERS_STATIC=1 SASHELPERS_RESULTS=$(CURDIR)/_build/test-results \
	  $(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider $(NOTEBOOKS)

# Build the site from the unexecuted notebooks (execution off) to check TOC, references, links.
book-check: $(STAMP) $(MATHJAX_TGZ)
	rm -rf _build/check && mkdir -p _build/check/src/notebooks
	cp -r _config.yml _toc.yml book _build/check/src/
	$(call stage-mathjax,_build/check/src)
	cp $(NOTEBOOKS) _build/check/src/notebooks/
	$(BIN)/python -m sashelpers.core.report scorecard --page book/scorecard.md \
	  --out _build/check/src/book/scorecard.md --results _build/test-results
	$(BIN)/jupyter-book build _build/check/src --path-output _build/check -W --keep-going -q

## lab: explore the notebooks in JupyterLab (installs it into .venv on first use, with
## jupyterlab-myst so that MyST roles such as {doc} and {cite} render in the notebooks).
lab: $(STAMP)
	$(BIN)/python -c 'import jupyterlab, jupyterlab_myst' 2>/dev/null \
	  || $(BIN)/python -m pip install -q jupyterlab jupyterlab-myst
	# JupyterLab refuses to run as root unless told to (containers often run as root)
	$(BIN)/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks

## bench: kernel throughput, numpy vs cupy (when a GPU is usable) vs peers, as one table.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf _build
