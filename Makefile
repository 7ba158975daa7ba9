# The two README commands: `make run` (set up + the main job) and `make test` (set up + the tests).
.PHONY: setup run test quick lint bench
VENV := .venv
PY := $(VENV)/bin/python

setup:
	@bash scripts/setup.sh

run: setup
	@bash scripts/run.sh

test: setup
	@bash scripts/test.sh

lint: setup
	$(PY) -m ruff check rho_core rho_cli tasks flows deployments tests benchmarks
