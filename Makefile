# Everything runs from the project venv; `make venv` (re)builds it when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := src tests bench

.PHONY: loadgen venv run demo test lint fmt typecheck pytest browser promtool sandbox bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: venv
	$(BIN)/b24bridge serve

# Sandbox portals and b24bridge in one process: deals handed over, a contact made by robot, shown as they arrive.
demo: venv
	$(BIN)/b24bridge demo

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/lint-imports

fmt: venv
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

typecheck: venv
	$(BIN)/mypy

pytest: venv browser promtool
	$(BIN)/pytest

# The admin page's browser tests drive Debian's chromium (Playwright cannot download a browser of its own here):
# installed when missing and this is root with apt-get (CI); otherwise this says how, and those tests fail saying so.
browser:
	@test -x "$${B24BRIDGE_CHROMIUM:-/usr/bin/chromium}" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "could not install chromium: the browser tests will fail" >&2; \
	  else \
	    echo "the browser tests need Debian's chromium: sudo apt-get install chromium" >&2; \
	  fi; }

# The deployment tests check the alert rules and their unit tests with promtool (Debian's prometheus package):
# installed the same way; without it those checks skip, saying so.
promtool:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's prometheus (for promtool)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        prometheus >/dev/null; } || echo "could not install prometheus: promtool checks will skip" >&2; \
	  else \
	    echo "promtool checks skip without Debian's prometheus: sudo apt-get install prometheus" >&2; \
	  fi; }

test: lint typecheck pytest

sandbox: venv
	$(BIN)/b24bridge sandbox

# Every benchmark in turn, each printing its figure beside its baseline (docs/benchmarks.md); BENCH=name runs one.
bench: venv loadgen
	$(BIN)/python bench/__main__.py $(BENCH)

# The HTTP benchmarks load the service with wrk (Debian's package): installed as chromium is; bench/ingest.py
# says so and stops without it, the others fall back to a client of their own.
loadgen:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's wrk for the benchmarks"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
	      || echo "could not install wrk" >&2; \
	  else \
	    echo "the HTTP benchmarks use wrk: sudo apt-get install wrk" >&2; \
	  fi; }

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
