# rr: `make demo` trains TRM on generated Sudokus on the CPU and prints held-out exact accuracy; `make test` runs
# the test suite. Both create .venv (Python 3.10+) and install what they need into it first.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test test-all install clean

$(BIN)/rr: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/rr

install: $(BIN)/rr

demo: $(BIN)/rr
	$(BIN)/rr fit --config configs/demo_sudoku.yaml
	$(BIN)/rr test --config configs/demo_sudoku.yaml --ckpt_path runs/demo_sudoku/latest/checkpoints/last.ckpt

test: $(BIN)/rr
	$(BIN)/python -m pytest -q

test-all: $(BIN)/rr
	$(BIN)/python -m pytest -q -m "slow or not slow"

clean:
	rm -rf $(VENV) runs .cache .pytest_cache
