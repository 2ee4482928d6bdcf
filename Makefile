# Two commands a newcomer needs: `make demo` (the main job on embedded engines) and `make test`.
# `make quick` is the loop before each commit (under 3 minutes): every module, no real Airflow deployment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The test files run in two processes (one per core of the 2-core machines the suite is sized for), one file
# per process at a time; the files with slow tests start first (tests/conftest.py).
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile

.PHONY: install demo test quick lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m airflow_provider_duckling.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST)

quick: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST) -m quick

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .duckling
