# One command to set up and run the demo, one to set up and run the tests (README).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast bench-lenet clean

$(BIN)/lth: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(BIN)/lth

setup: $(BIN)/lth

demo: setup
	$(BIN)/lth run --preset digits-quick

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m 'not slow'

clean:
	rm -rf $(VENV) runs .pytest_cache
