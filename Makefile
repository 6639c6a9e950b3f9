# The two commands of the README: `make run` (the default experiment) and `make test`.
# Each creates .venv and installs the pinned dependencies on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install run test test-slow test-all lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/jaxtrain train configs/digits_cnn.yaml

# One worker per core; a test file's tests stay on one worker (they share module fixtures).
# `make test`: the default suite (every invariant at small size, under 3 minutes on 2 cores);
# `make test-all`: that, then the tests marked slow (under 20 minutes). See docs/testing.md.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n auto --dist loadfile

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n auto --dist loadfile -m "slow or default_xla"

test-all: test test-slow

lint: $(STAMP)
	$(VENV)/bin/ruff check jaxtrain tests scripts

bench: $(STAMP)
	$(VENV)/bin/python scripts/bench_default.py

clean:
	rm -rf $(VENV) runs
