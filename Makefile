# Every target bootstraps .venv with python3 when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint validate bench external docs clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --upgrade pip
	@$(PIP) install -e ".[test,dask,postgres]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cryoweave demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools

# Minutes-long validations against ground truth (pytest -m slow).
validate: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Tests against peer programs (RELION: apt-get install -y relion).
external: $(STAMP)
	$(BIN)/python -m pytest -q -m external

# Side-by-side benchmarks; results go to docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# The protocol reference (docs/protocols/, committed) from the declarations, then the site
# (mkdocs, Material theme; the `docs` extra) into site/ in strict mode.
DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	@$(PIP) install -e ".[docs]"
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/cryoweave docs docs/protocols
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo_project site .pytest_cache .ruff_cache
