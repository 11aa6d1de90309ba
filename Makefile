# make demo: a real search on the shipped SST-2 sample, offline. make test: lint + tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv demo test lint unit dashboard clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch; a plain `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/tuner search --task sentiment --trials 4

lint: venv
	$(BIN)/ruff check tuner plugins tests bench
	$(BIN)/ruff format --check tuner plugins tests bench
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -m "not slow"

test: lint
	$(BIN)/pytest -q -n 2

dashboard: venv
	$(BIN)/tuner dashboard

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
