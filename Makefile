# gpt2-owt — the two commands of the README:
#   make demo   set up .venv and run the whole release pipeline on the bundled OpenWebText sample (CPU)
#   make test   set up .venv and run the full test suite (what .ci/run calls)
#
# TORCH is installed first so that pip never resolves `torch` to a multi-GB CUDA build on a CPU machine.
# On a GPU machine: `make setup TORCH="torch --index-url https://download.pytorch.org/whl/cu128"` (or any build).

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test,track,interp,harness,trace]"
	touch $@

demo: setup
	PY=$(PY) bash scripts/demo.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
