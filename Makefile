# cargohold: `make run` starts the registry, `make check` is the fast test loop (unit + SQLite integration),
# `make test` passes the whole suite (SQLite and PostgreSQL), `make bench` measures.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run check test bench fsck clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

system-deps:
	scripts/install-system-deps.sh

run: $(VENV)/.installed
	$(BIN)/cargohold serve

# Everything that needs no PostgreSQL: the unit tests and the integration tests on SQLite.
check: $(VENV)/.test-installed system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider -k "not postgres" $(PYTEST_ARGS)

test: $(VENV)/.test-installed system-deps
	url=$$(CARGOHOLD_PYTHON=$(BIN)/python scripts/ensure-services.sh) && \
	  CARGOHOLD_TEST_POSTGRES_URL=$$url $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(VENV)/.test-installed system-deps
	$(BIN)/python bench/run.py
	$(BIN)/python bench/cache.py
	$(BIN)/python bench/imports.py
	$(BIN)/python bench/login_flood.py

fsck: $(VENV)/.installed
	$(BIN)/cargohold fsck

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
