# The dev loop. `make help` lists the targets; each is one plain command you can also type.
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV): requirements.txt requirements-dev.txt pyproject.toml sim/pyproject.toml sim/requirements.txt
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -q -r requirements-dev.txt -e .
	@touch $(VENV)

up: $(VENV) ## Start the whole engine with the demo (embedded PostgreSQL and Redis if no URLs).
	$(VENV)/bin/smartroute up --demo

test: $(VENV) ## Run every test, as CI does.
	$(PY) -m pytest

test-fast: $(VENV) ## The unit layer alone: no services, no processes, seconds.
	$(PY) -m pytest -m unit

lint: $(VENV) ## ruff (lint and format), mypy and the import contracts, as CI does.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

migrate: $(VENV) ## Migrate the database to head.
	$(VENV)/bin/smartroute db upgrade

.PHONY: help up test test-fast lint migrate
