# `make demo` and `make test` each build .venv on first use: torch 2.13.0 first, then the rest, at the
# versions of constraints.txt. `make device-check` builds .venv-device, the device half alone.
# Which torch build: whatever `pip install torch==2.13.0` finds. On Linux x86-64 from PyPI that is a CUDA
# build (what a GPU host wants); this machine kind's pip configuration finds a CPU build on disk. To choose,
# name PyTorch's own index: `make venv TORCH_INDEX=https://download.pytorch.org/whl/cpu` (CPU build) or
# `.../whl/cu128` (CUDA 12.8).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := -m pip install -q -c constraints.txt
TORCH_INDEX ?=
TORCH_FROM  := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: venv demo test lint device-check device-check-lowest mutate clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) $(PIP) $(TORCH_FROM) torch==2.13.0
	$(PY) $(PIP) -e '.[host,cpu,test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	rm -rf demo_out
	$(VENV)/bin/sst-edge demo --out demo_out

# ruff, then the package's layers (import-linter; the contracts are in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check sst_edge tests bench
	$(VENV)/bin/lint-imports

test: $(STAMP) lint
	$(PY) -m pytest -q

# The device half as a user installs it (`pip install '.[cpu]'`, no torch) runs the README's device verbs
# on a model exported by the full install: at the versions of constraints.txt (.venv-device), and at the
# lowest versions pyproject.toml allows (.venv-device-lowest). Both keep the host half (data, model, the
# full install's answers) in $(DEVICE_WORK) and reuse it while nothing it depends on changed.
DEVICE_WORK := .device-check-work
device-check: $(STAMP)
	$(PY) -m tests.device_check --python $(PYTHON) --host-work $(DEVICE_WORK)

device-check-lowest: $(STAMP)
	$(PY) -m tests.device_check --python $(PYTHON) --host-work $(DEVICE_WORK) --lowest

# Mutation testing (mutmut) of the core modules, each against its own tests; not part of `make test` or CI.
# `make mutate MODULE=sst_edge/fileio.py` for one module, CHILDREN=2 to test two mutants at once.
MODULE   ?=
CHILDREN ?= 1
mutate: $(STAMP)
	$(PY) -m tests.mutate --children $(CHILDREN) $(MODULE)

clean:
	rm -rf $(VENV) .venv-device .venv-device-lowest $(DEVICE_WORK) demo_out .pytest_cache .mutmut
