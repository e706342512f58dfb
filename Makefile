# Every target creates the virtualenv first when it is missing (scripts/bootstrap); only `test`
# also installs Debian's chromium for the browser test (scripts/install-browser).
.PHONY: run demo test test-quick lint docs bench venv browser
VENV := .venv/bin
TESTS := ig_refresh_dagster_tests

venv:
	@scripts/bootstrap

browser:
	@scripts/install-browser

run: venv          ## interactive: embedded stack + Dagster UI on :3000 + health on :3053
	$(VENV)/ig-refresh dev

demo: venv         ## non-interactive: process the demo queue, print a summary, exit
	$(VENV)/ig-refresh demo

test: venv browser ## the whole suite, starting its own broker, valkey and HTTP stand-ins
	$(VENV)/python -m pytest $(TESTS)

test-quick: venv   ## the inner loop: every test that needs no daemon and is not marked slow
	$(VENV)/python -m pytest $(TESTS) -m "not slow and not daemon" -q -n 3 --dist loadfile

lint: venv         ## ruff, the layering contracts in .importlinter, and the docs site (strict)
	$(VENV)/ruff check . && $(VENV)/ruff format --check . && $(VENV)/lint-imports \
		&& $(VENV)/mkdocs build --strict --quiet

docs: venv         ## serve the docs site on :8000 while you edit docs/
	$(VENV)/mkdocs serve

bench: venv
	$(VENV)/python -m benchmarks.run
