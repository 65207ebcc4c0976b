# The two commands a newcomer needs are `make run` and `make test`.
# Everything they need is installed by runners/bootstrap.sh and cached under
# $(TRAFFIC_CACHE_DIR) (default ~/.cache/traffic-forecast); a second run downloads nothing.
SHELL := /bin/bash
export TRAFFIC_CACHE_DIR ?= $(HOME)/.cache/traffic-forecast
VENV := .venv
TRAFFIC := $(VENV)/bin/traffic
PYTEST_ARGS ?=

.PHONY: run test chaos setup setup-test lint down clean-work

## run: set up, then run the whole local system (platform, model, streaming job, replay, API)
run: setup
	$(TRAFFIC) run

## test: set up (with the browser), then run every test against the real local services (not the chaos suite)
test: setup-test
	$(VENV)/bin/python -m pytest -m "not chaos" $(PYTEST_ARGS)

## chaos: the fault tests (tests/chaos): kill or stop real services mid-replay; results go to docs/faults.md
chaos: setup-test
	$(VENV)/bin/python -m pytest -m chaos -s tests/chaos $(PYTEST_ARGS)

setup:
	bash runners/bootstrap.sh

setup-test:
	bash runners/bootstrap.sh --with-test-tools

lint: setup
	$(VENV)/bin/python -m ruff check .

## down: stop every local service this checkout started
down:
	$(TRAFFIC) platform down
