# Wiz Web: `make run` to start everything on this box, `make test` to run the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# llama-cpp-python compiles from source; let cmake use every core. pip caches the built wheel.
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama.cpp is compiled for this CPU (-march=native) but without AMX: on virtual machines that
# list AMX without allowing it, ggml's AMX kernels crash at the first matrix product. Set
# CMAKE_ARGS yourself to build otherwise (GPU back ends, for instance).
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
export CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)"
endif

.PHONY: run test check lint format install model browser clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" "setuptools>=70"
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The default model, and a few tokens of it through llama.cpp: a wheel from pip's cache that was
# built for another CPU (or with AMX) crashes here (exit 3), and is built again once.
model: install
	@$(PY) -m wizweb.default_model --check || { \
	    test $$? -eq 3 || exit 1; \
	    echo "Building llama-cpp-python again for this CPU (about 5 minutes)..."; \
	    $(PY) -m pip cache remove llama_cpp_python >/dev/null 2>&1 || true; \
	    $(PY) -m pip install --quiet --force-reinstall --no-deps \
	        "llama-cpp-python==$$($(PY) -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"; \
	    $(PY) -m wizweb.default_model --check; }

browser:
	bash scripts/install-chromium.sh

run: install model
	$(PY) manage.py serve $(ARGS)

# The tests that need no model, worker, daphne or browser, on every core (pytest-xdist: each
# process has its own data dir, private Redis and test database). Exit 5 is "no test selected"
# (PYTEST_ARGS naming only tests of the other tier).
FAST_TESTS = WIZ_TEST_TIER=fast $(PY) -m pytest -m "not stack" -n auto $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The whole suite: the fast tier, then the tests that need the stack, one at a time (they share
# the workers, daphne and the two cores).
test: lint model browser
	$(FAST_TESTS)
	$(PY) -m pytest -m stack $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The fast tier alone, with lint.
check: lint model
	$(FAST_TESTS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy wizweb chat models_admin inference usage documents

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts
