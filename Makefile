# Customer.io warehouse loader. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install run migrate test test-fast lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## build .venv with the loader and its dev tools (quick when nothing changed)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

run: install migrate ## install, migrate, create a demo source if none, serve on 127.0.0.1:8080
	$(BIN)/loader demo
	$(BIN)/loader serve

migrate: install ## upgrade every source's schema to the newest revision
	$(BIN)/loader migrate

test: install ## run the whole test suite (DuckDB and the local PostgreSQL), three tests at a time
	$(BIN)/python -m pytest -q -n 3 --dist worksteal

test-fast: install ## the tests that start no server process
	$(BIN)/python -m pytest -q -n 3 --dist worksteal -m "not slow"

lint: install ## ruff (lint and format check) and mypy
	$(BIN)/ruff check loader migrations tests bench
	$(BIN)/ruff format --check loader migrations tests bench
	$(BIN)/mypy loader

format: install ## apply ruff's formatting and fixes
	$(BIN)/ruff format loader migrations tests bench
	$(BIN)/ruff check --fix loader migrations tests bench

bench: install ## measure speed (prints a table, then one JSON line); BENCH_QUICK=1 for a short run
	@command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null || echo "wrk not installed: HTTP figures skipped"
	@$(BIN)/python -c "import dlt" 2>/dev/null || $(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev,bench]"
	$(BIN)/python bench/run.py

clean: ## remove the venv and local data
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
