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

## book: execute every notebook with papermill (PROFILE=quick|standard|paper) into _build/src,
## render the scorecard from the results records, and build the HTML site in _build/html.
book: $(STAMP)
	rm -rf $(STAGE) && mkdir -p $(STAGE)/notebooks $(RESULTS)
	cp -r _config.yml _toc.yml book $(STAGE)/
	@failed=""; for nb in $(NOTEBOOKS); do \
	  echo "== papermill $$nb (profile $(PROFILE))"; \
	  SASHELPERS_PROFILE=$(PROFILE) SASHELPERS_STATIC=1 SASHELPERS_RESULTS=$(CURDIR)/$(RESULTS) \
	    $(BIN)/papermill $$nb $(STAGE)/$$nb -p PROFILE $(PROFILE) --cwd notebooks --progress-bar \
	    || failed="$$failed $$nb"; \
	done; \
	$(BIN)/python -m sashelpers.report scorecard --page book/scorecard.md \
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
book-check: $(STAMP)
	rm -rf _build/check && mkdir -p _build/check/src/notebooks
	cp -r _config.yml _toc.yml book _build/check/src/
	cp $(NOTEBOOKS) _build/check/src/notebooks/
	$(BIN)/python -m sashelpers.report scorecard --page book/scorecard.md \
	  --out _build/check/src/book/scorecard.md --results _build/test-results
	$(BIN)/jupyter-book build _build/check/src --path-output _build/check -W --keep-going -q

## lab: explore the notebooks in JupyterLab (installs it into .venv on first use).
lab: $(STAMP)
	$(BIN)/python -c 'import jupyterlab' 2>/dev/null || $(BIN)/python -m pip install -q jupyterlab
	$(BIN)/jupyter lab notebooks

## bench: kernel throughput, numpy vs cupy (when a GPU is usable) vs peers, as one table.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf _build
