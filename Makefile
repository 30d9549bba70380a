# gpt2-owt — the two commands of the README:
#   make demo   set up .venv and run the whole release pipeline on the bundled OpenWebText sample (CPU)
#   make test   set up .venv and run the full test suite (what .ci/run calls)
#
# TORCH is installed first so that pip never resolves `torch` to a multi-GB CUDA build on a CPU machine, and pinned
# (.venv/torch-pin.txt) for every install after it.
# On a GPU machine: `make setup TORCH="torch --index-url https://download.pytorch.org/whl/cu128"` (or any build).

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# Bergson (`gpt2-owt attribute`, the `attribution` extra) goes in with --no-deps: its metadata asks for torchvision,
# torchaudio and bitsandbytes, which it never imports for the methods used here and which would swap TORCH for a
# CUDA build; the extra lists what it does import (docs/attribution.md, Install).
BERGSON ?= bergson==2.5.1
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
RANDOM_ORDER := -p random_order --random-order-bucket=module

.PHONY: setup demo test test-fast chromium clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -c "from importlib.metadata import version; print('torch==' + version('torch'))" > $(VENV)/torch-pin.txt
	$(PY) -m pip install --quiet -c $(VENV)/torch-pin.txt -e ".[test,track,interp,harness,trace,explore,attribution]"
	$(PY) -m pip install --quiet -c $(VENV)/torch-pin.txt --no-deps $(BERGSON)
	touch $@

demo: setup
	PY=$(PY) bash scripts/demo.sh

# Both tiers, the unit tier first: in a random order of modules (and of tests within each), its seed printed in
# pytest's header ("Using --random-order-seed=N"; PYTEST_ARGS="--random-order-seed=N" reruns that order), so that a
# test passing only after another one fails here; then the slow tier in file order.
test: setup chromium
	$(PY) -m pytest -m "not slow" $(RANDOM_ORDER) $(PYTEST_ARGS)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# The explorer's browser test (tests/test_explore.py) drives Debian's chromium through playwright, which never
# downloads a browser of its own. Installed here when missing and apt-get can; elsewhere only that test skips.
chromium:
	@if command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then :; \
	else echo "note: no chromium (Debian: apt-get install chromium): the explorer's browser test will skip"; fi

# The unit tier: everything not marked slow (multiprocess and browser tests are slow too; pyproject.toml markers).
test-fast: setup
	$(PY) -m pytest -m "not slow" $(RANDOM_ORDER) $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
