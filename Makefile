# `make demo` and `make test` each build .venv on first use: torch 2.13.0 (CPU build) first, then the rest.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	rm -rf demo_out
	$(VENV)/bin/sst-edge demo --out demo_out

lint: $(STAMP)
	$(VENV)/bin/ruff check sst_edge tests bench

test: $(STAMP) lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_out .pytest_cache
