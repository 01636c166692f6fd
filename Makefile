# haremq: `make run` starts a broker with embedded defaults; `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck layers unit bench clean system-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/haremq serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy src/haremq

layers: $(STAMP)
	$(BIN)/lint-imports

system-deps:
	bash tools/system-deps.sh

test: system-deps lint typecheck layers
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) haremq-data .mypy_cache .ruff_cache
