# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The virtualenv is ours: let Python keep the bytecode it compiles there, even on machines
# that set PYTHONDONTWRITEBYTECODE (there every worker process would compile torch again).
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install run test test-fast test-integration test-system test-scripts lint bench clean

install: $(STAMP)

# The tests run real diffusers models on the CPU. torch is pinned first so that the
# diffusion extra does not pull another build: the CPU wheel where a machine keeps one
# (this project's CI machines do), PyPI's default (CUDA) build elsewhere; override
# TORCH to choose, e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu".
TORCH ?= torch==2.13.0

# --no-compile: pip would byte-compile every module of torch and transformers (two
# minutes); Python compiles the few that are imported, once, when first imported.
$(STAMP): setup.cfg setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile $(TORCH)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev,diffusion]'
	touch $(STAMP)

run: install
	$(BIN)/python -m app.devstack

# The whole suite, spread over TEST_PROCESSES processes (pytest-xdist), each with a Redis
# and workers of its own; a file's tests stay together. Most tests wait on processes
# and events rather than compute, so twice the cores keeps both busy.
TEST_PROCESSES ?= 4
PYTEST := $(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

test: install lint
	$(PYTEST)

# One tier (docs/development.md): fast (one real Redis, no process of ours),
# integration (real workers), system (kills, namespaces, the browser).
test-fast: install
	$(PYTEST) -m "not integration and not system"

test-integration: install
	$(PYTEST) -m integration

test-system: install
	$(PYTEST) -m system

# The tests of the Lua scripts, events and streams, which differ most between servers:
# CI runs them on the server `make test` did not use (CHORDLINE_REDIS_SERVER).
SCRIPT_TESTS := tests/tasks tests/app/test_sockets.py tests/app/test_history.py \
	tests/app/test_events_api.py tests/app/test_event_hub.py tests/app/test_jobs_listing.py
test-scripts: install
	$(PYTEST) $(SCRIPT_TESTS)

lint: install
	$(BIN)/ruff check app tasks workers tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# Job throughput (submit, drain, end to end, per-step overhead, chain message bytes)
# beside bare Celery (about three minutes), Redis memory per finished job beside bare
# Celery's stored result (about a minute and a half), fleet routing beside one plain
# Celery queue (about two minutes), the diffusion overhead beside the bare pipeline (under
# a minute), workflow makespan beside raw Celery (about two minutes), then event latency
# to 1,000 WebSocket clients beside raw Redis pub/sub (about one minute), and 200 clients
# submitting at once beside a bare Flask-and-Celery API (about a minute and a half).
bench: install
	$(BIN)/python -m benchmarks.throughput
	$(BIN)/python -m benchmarks.footprint
	$(BIN)/python -m benchmarks.fleet_routing
	$(BIN)/python -m benchmarks.diffusion_overhead
	$(BIN)/python -m benchmarks.workflow_makespan
	$(BIN)/python -m benchmarks.event_latency
	$(BIN)/python -m benchmarks.submit_load

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
