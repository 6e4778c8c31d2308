# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test venv bench lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

# Embedded broker (Tansu), one worker and demo traffic; Ctrl-C stops all.
run: venv
	$(BIN)/python -m streams run

# The whole suite: unit, agent and integration tests (real broker, Prometheus, Chromium).
test: venv
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python -m bench

lint: venv
	$(BIN)/ruff check streams tests bench
	$(BIN)/mypy
