# The two commands of the quick start: `make demo` and `make test`.
# Each creates or updates .venv from the project's own files (pyproject.toml + constraints.txt).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TOOLS  := $(VENV)/.tools

.PHONY: demo test lint typecheck unit schema bench clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "markctl needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# Debian programs the tests drive as independent peers: mbpoll (a Modbus client we did not write) and
# a PostgreSQL server (the registry on PostgreSQL). Installed when missing and this user may (root with
# apt-get, as on CI); elsewhere a note is printed and the tests that need them skip, saying why.
$(TOOLS): $(STAMP)
	@missing=""; command -v mbpoll >/dev/null || missing="$$missing mbpoll"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	      || echo "note: could not install$$missing; the tests that need them will skip"; \
	  else echo "note: not installed:$$missing (apt-get install$$missing); the tests that need them will skip"; fi; \
	fi
	@touch $@

demo: $(STAMP)
	$(BIN)/markctl demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(TOOLS)
	$(BIN)/pytest -q

# Regenerate firmware_profiles/schema.json after changing markctl/profiles.py (a test checks drift).
schema: $(STAMP)
	$(BIN)/markctl profiles schema --output firmware_profiles/schema.json

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-out build dist *.egg-info .mypy_cache .pytest_cache .ruff_cache
