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

# A tool from Debian's packages, installed when missing and this is root with apt-get (CI); otherwise this says how.
# $(call debian,PRESENT,PACKAGE,FOR,WITHOUT[,APT OPTIONS]): PRESENT is the shell test that it is there, FOR what
# needs it, WITHOUT what happens when it is not.
define debian
	@$(1) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's $(2) for $(3)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(5) \
	        $(2) >/dev/null; } || echo "could not install $(2): $(4)" >&2; \
	  else \
	    echo "$(3) need Debian's $(2) ($(4) without it): sudo apt-get install $(2)" >&2; \
	  fi; }
endef

# The admin page's browser tests drive Debian's chromium (Playwright cannot download a browser of its own here).
browser:
	$(call debian,test -x "$${B24BRIDGE_CHROMIUM:-/usr/bin/chromium}",chromium,the browser tests,they fail)

# The deployment tests check the alert rules and their unit tests with promtool (Debian's prometheus package).
promtool:
	$(call debian,command -v promtool >/dev/null,prometheus,the promtool checks,they skip,--no-install-recommends)

test: lint typecheck pytest

sandbox: venv
	$(BIN)/b24bridge sandbox

# Every benchmark in turn, each printing its figure beside its baseline (docs/benchmarks.md); BENCH=name runs one.
bench: venv loadgen
	$(BIN)/python bench/__main__.py $(BENCH)

# The HTTP benchmarks load the service with wrk (Debian's package); bench/ingest.py stops without it, the others
# fall back to a client of their own.
loadgen:
	$(call debian,command -v wrk >/dev/null,wrk,the HTTP benchmarks,a slower client)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
