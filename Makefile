# The two commands of the README: `make run` (the default experiment) and `make test`.
# Each creates .venv and installs the pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/jaxtrain train configs/digits_cnn.yaml

# One worker per core; a test file's tests stay on one worker (they share module fixtures).
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n auto --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check jaxtrain tests scripts

bench: $(STAMP)
	$(VENV)/bin/python scripts/bench_default.py

clean:
	rm -rf $(VENV) runs
