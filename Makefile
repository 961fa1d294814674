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

.PHONY: venv demo test lint docs figures device-check device-check-lowest mutate clean system-packages

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) $(PIP) $(TORCH_FROM) torch==2.13.0
	$(PY) $(PIP) -e '.[host,cpu,openvino,bench,test,docs]'
	touch $(STAMP)

# The Debian packages the live tests run (tests/live_servers.py): mosquitto (an MQTT broker, and
# mosquitto_passwd), GStreamer's RTSP server for Debian's /usr/bin/python3 (gi is built for it, not for the
# venv) with the plugins its pipeline uses (qtdemux, rtph264pay: good; h264parse: bad, which the server
# library needs anyway; nothing decodes or encodes, so no -ugly or -libav), openssl (the TLS test's
# certificates) and openssh-server (the remote search test's throwaway sshd on loopback, and the ssh client
# the search checks its machines with). Installed with apt-get as root (CI runs as root), `apt-get update`
# first, only when one is missing: 145 packages, 45 s here from none of them installed (openssh-server
# alone: 14 s); when all are there, 0.2 s of dpkg-query.
SYSTEM_PACKAGES := mosquitto python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
                   gstreamer1.0-plugins-good gstreamer1.0-plugins-bad openssl openssh-server

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	echo "system packages missing:" $$missing; \
	if ! command -v apt-get >/dev/null; then \
	    echo "no apt-get here: install the equivalents of" $$missing "yourself (the live tests need them)"; exit 1; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	    echo "not root: run 'sudo make system-packages' (or: sudo apt-get install" $$missing")"; exit 1; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get -q -o DPkg::Lock::Timeout=300 update && \
	apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends $$missing

venv: $(STAMP)

demo: $(STAMP)
	rm -rf demo_out
	$(VENV)/bin/sst-edge demo --out demo_out

# ruff, then the package's layers (import-linter; the contracts are in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check sst_edge tests bench
	$(VENV)/bin/lint-imports

test: $(STAMP) lint system-packages
	$(PY) -m pytest -q

# The figures the docs show, re-run on this host (docs/figures/*.md, each with its date, commit and host);
# some measure the demo's model, so the demo runs first when demo_out has none
figures: $(STAMP)
	test -f demo_out/models/sst_tiny/card.json || $(MAKE) demo
	$(PY) bench/figures.py

# The reference (docs/, MkDocs with the material theme) built into site/, every warning an error
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The device half as a user installs it (`pip install '.[cpu,openvino]'`, no torch) runs the README's device verbs
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
