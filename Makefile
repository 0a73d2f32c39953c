# `make demo` sets up a virtual environment and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel of torch lies on this machine's disk; installing it first keeps pip from
# resolving torch>=2.4 to a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vaekit train --preset demo --out runs/demo
	$(VENV)/bin/vaekit evaluate runs/demo --k 500
	$(VENV)/bin/vaekit sample runs/demo --out runs/demo/samples.png
	$(VENV)/bin/vaekit reconstruct runs/demo --out runs/demo/reconstructions.png
	$(VENV)/bin/vaekit interpolate runs/demo --out runs/demo/interpolations.png

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/mnist_nll.py

clean:
	rm -rf runs .pytest_cache
