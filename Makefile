# The two quick-start commands (README): `make demo` and `make test`. CI runs `make test` via .ci/run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_MODEL := models/random-tiny
SOURCES := pisar worker producer infra tests

.PHONY: setup demo test services

# A virtual environment with Pisar installed; torch pinned by constraints.txt (CPU wheel here).
$(BIN)/pisar: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $@

setup: $(BIN)/pisar

# No model hub is reachable, so the demo builds a random-weight model of the reference architecture.
$(DEMO_MODEL)/config.json: | $(BIN)/pisar
	$(BIN)/python -m pisar.random_model $(DEMO_MODEL) samples

# Quick start 1: transcribe the shipped sample lines in-process (SQLite catalog ./pisar.db); rerun resumes.
demo: $(BIN)/pisar $(DEMO_MODEL)/config.json
	$(BIN)/pisar run samples/print-lines --model $(DEMO_MODEL) --name samples -o results.jsonl
	@head -n 3 results.jsonl

# Quick start 2: lint, then the test suite against real Postgres, Redis, SeaweedFS and Celery workers.
test: $(BIN)/pisar
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/python -m pytest

# Postgres, Redis (the machine's, or throwaway) and a throwaway SeaweedFS; prints the env to use.
services: $(BIN)/pisar
	$(BIN)/python infra/local_services.py up
