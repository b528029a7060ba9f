# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

$(STAMP): setup.cfg setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/python -m app.devstack

test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check app tasks workers tests benchmarks
	$(BIN)/mypy

# Fleet routing beside one plain Celery queue (about two minutes), workflow makespan
# beside raw Celery (about two minutes), then event latency to 1,000 WebSocket clients
# beside raw Redis pub/sub (about one minute).
bench: install
	$(BIN)/python -m benchmarks.fleet_routing
	$(BIN)/python -m benchmarks.workflow_makespan
	$(BIN)/python -m benchmarks.event_latency

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
