# `make demo` sets up a virtual environment and shows every use; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel of torch lies on this machine's disk; installing it first keeps pip from
# resolving torch>=2.4 to a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
# Where mnist/ and fashion-mnist/ are (IDX .gz files; README "Data").
export VAEKIT_DATA ?= $(abspath ../shared/data)

.PHONY: setup demo test lint docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The README's quickstart, line for line (tests/test_readme.py runs it on a small data set).
demo: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH sh scripts/demo.sh

test: $(STAMP)
	$(PY) -m pytest
	$(MAKE) lint

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) benchmarks/mnist_nll.py

clean:
	rm -rf runs site .pytest_cache
