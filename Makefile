# The two quick-start commands (README): `make demo` and `make test`. CI runs `make test` via .ci/run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_MODEL := models/demo
SOURCES := pisar worker producer infra tests bench

.PHONY: setup demo demo-model test test-quick lint services test-tools lint-imports

# A virtual environment with Pisar installed; torch pinned by constraints.txt (CPU wheel here).
$(BIN)/pisar: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,detect]"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt kraken
	touch $@

setup: $(BIN)/pisar

# Quick start 1: transcribe the shipped sample lines in-process (SQLite catalog ./pisar.db) with the
# shipped demo model (trained by `pisar train`, see models/demo/README.md); rerun resumes.
demo: $(BIN)/pisar
	$(BIN)/pisar run samples/print-lines --model $(DEMO_MODEL) --name samples -o results.jsonl --show 20

# Rebuild the shipped demo model from ../shared/data/print-lines (about an hour on 2 CPU cores).
demo-model: $(BIN)/pisar
	$(BIN)/pisar train ../shared/data/print-lines -o $(DEMO_MODEL) --preset small --synthetic-from-train --augment \
	  --val-share 0.11 --steps 9000 --lr 1e-3 --warmup 300 --eval-every 1000 --save-every 500 --save-dtype float16

# Debian packages the tests drive: Chromium + ChromeDriver (Flower), docker-compose (compose.yaml), promtool.
test-tools: $(BIN)/pisar
	bash infra/install-test-tools.sh $(BIN)

# Quick start 2: lint, then the whole suite against real Postgres, Redis, SeaweedFS and Celery workers
# (what CI runs). Most tests wait on subprocesses (workers, servers), so two pytest processes share
# the two cores, one test file each at a time (their module fixtures stay whole). The fault scenarios
# (marker chaos) time leases and outages, so they run afterwards, apart from the rest, three at a time:
# they mostly wait (leases, outages, slow-accelerator hooks), each has its own database, queue and
# servers, and none asserts a wall-clock bound that another scenario's load could break (a lease is
# 10 s, renewed every 3 s). A gpu test runs only where torch sees a CUDA device.
CHAOS := tests/test_worker_faults.py
# The longest files first (each runs whole on one process): started last, one of them would leave the
# other process idle at the end. pytest collects each file once, here or under tests/.
LONGEST := tests/test_bench.py tests/test_detect_blla.py tests/test_detect_pipeline.py tests/test_end_to_end.py tests/test_embedded.py \
  tests/test_retry.py tests/test_train.py
PYTEST := $(BIN)/python -m pytest
# The project's own modules compiled once: an editable install leaves them as source, and where
# PYTHONDONTWRITEBYTECODE is set (this machine) each of the suite's hundreds of processes would
# compile them again (0.33 s of CPU each, measured).
COMPILE := $(BIN)/python -m compileall -q pisar worker producer infra tests bench > /dev/null
test: $(BIN)/pisar test-tools lint
	$(COMPILE)
	$(PYTEST) -n 2 --dist loadfile --ignore=$(CHAOS) $(LONGEST) tests
	$(PYTEST) -n 3 --dist load $(CHAOS)

# The tier for your own loop (under 3 minutes here): unit tests and the fast real-service tests; no
# whole campaigns, training runs, benchmarks or fault scenarios (markers slow, bench, chaos, gpu).
test-quick: $(BIN)/pisar test-tools
	$(BIN)/ruff check $(SOURCES)
	$(COMPILE)
	$(PYTEST) -n 2 --dist loadfile -m "not slow and not bench and not chaos and not gpu" --ignore=$(CHAOS) tests

lint: $(BIN)/pisar
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(MAKE) --no-print-directory lint-imports

# Postgres, Redis (the machine's, or throwaway) and a throwaway SeaweedFS; prints the env to use.
services: $(BIN)/pisar
	$(BIN)/python infra/local_services.py up

# import-linter's contracts (pyproject.toml) on a copy of the package in its installed layout
# (pyproject's package-dir: worker/ as pisar/worker, producer/ as pisar/producer): grimp cannot walk
# the editable install's mapping. A plain copy, not a wheel build: the same tree in a second.
lint-imports: $(BIN)/pisar
	rm -rf build/importgraph && mkdir -p build/importgraph
	cp -r pisar build/importgraph/pisar && cp -r worker build/importgraph/pisar/worker && cp -r producer build/importgraph/pisar/producer
	cd build/importgraph && PYTHONPATH=. ../../$(BIN)/lint-imports --no-cache ../../pyproject.toml
