# Wiz Web: `make run` to start everything on this box, `make test` to run the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# llama-cpp-python compiles from source; let cmake use every core. pip caches the built wheel.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test check lint format install model browser clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" "setuptools>=70"
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

model: install
	$(PY) -m wizweb.default_model

browser:
	bash scripts/install-chromium.sh

run: install model
	$(PY) manage.py serve $(ARGS)

test: lint model browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast tier: lint and the tests that need no model, worker, daphne or browser.
check: lint model
	WIZ_TEST_TIER=fast $(PY) -m pytest -m "not stack" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy wizweb chat models_admin inference usage documents

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts
