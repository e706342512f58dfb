# Every target creates the virtualenv first when it is missing (scripts/bootstrap).
.PHONY: run demo test lint bench venv
VENV := .venv/bin

venv:
	@scripts/bootstrap

run: venv          ## interactive: embedded stack + Dagster UI on :3000 + health on :3053
	$(VENV)/ig-refresh dev

demo: venv         ## non-interactive: process the demo queue, print a summary, exit
	$(VENV)/ig-refresh demo

test: venv         ## the whole suite, starting its own broker, valkey and HTTP stand-ins
	$(VENV)/python -m pytest ig_refresh_dagster_tests

lint: venv         ## ruff, and the layering contracts in .importlinter
	$(VENV)/ruff check . && $(VENV)/ruff format --check . && $(VENV)/lint-imports

bench: venv
	$(VENV)/python -m benchmarks.run
