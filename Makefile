# Two commands a newcomer needs: `make demo` (the main job on embedded engines) and `make test`.
# `make quick` is the loop before each commit (under 3 minutes): every module, no real Airflow deployment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The test files run in two processes (one per core of the 2-core machines the suite is sized for), one file
# per process at a time; the files with slow tests start first (tests/conftest.py).
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile

.PHONY: install os-packages demo test quick lint clean constraints

# The exact set of constraints.txt (setup.cfg only declares lower bounds), with the embedded engine.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,test]' -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

# OS packages the tests use, installed only when missing: Debian's Chromium for the browser tests (Playwright
# drives it; nothing downloads a browser build). As root, or through sudo; where neither apt-get nor the
# rights are there, the browser tests fail with the one command that installs it and everything else runs.
os-packages:
	@command -v chromium >/dev/null 2>&1 || { \
	    sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	    { $$sudo apt-get update -q && $$sudo env DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -q --no-install-recommends chromium; } \
	    || echo "make: could not install chromium (apt-get install -y chromium): the browser tests will fail"; }

demo: $(STAMP)
	$(BIN)/python -m airflow_provider_duckling.demo

test: $(STAMP) os-packages
	$(BIN)/ruff check .
	$(PYTEST)

quick: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST) -m quick

lint: $(STAMP)
	$(BIN)/ruff check .

# After a change to setup.cfg: resolve the newest set that satisfies it in a fresh virtualenv, and pin it.
constraints:
	rm -rf $(VENV).constraints
	$(PYTHON) -m venv $(VENV).constraints
	$(VENV).constraints/bin/pip install --quiet --upgrade pip
	$(VENV).constraints/bin/pip install --quiet '.[embedded,test,openlineage]'
	{ sed -n '1,3p' constraints.txt; $(VENV).constraints/bin/pip freeze --exclude-editable \
	    | grep -v '^airflow-provider-duckling'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(VENV).constraints

clean:
	rm -rf $(VENV) .duckling
