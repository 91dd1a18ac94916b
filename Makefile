# Two commands on a fresh machine: `make train` (setup + main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO := shards/demo
DEMO_BUILD := build --dataset synthetic --infill tile --infill grey --infill shuffle \
	--factual shuffle --factual mixed-rand --out $(DEMO)

.PHONY: install test train lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

# Builds the demo shards once (a build folder without manifest.json is unfinished and is rebuilt),
# checks them and draws a contact sheet. The trainer is not written yet.
train: install
	test -f $(DEMO)/manifest.json || $(VENV)/bin/augment $(DEMO_BUILD) --overwrite
	$(VENV)/bin/augment verify $(DEMO)
	$(VENV)/bin/augment info $(DEMO)
	$(VENV)/bin/augment preview $(DEMO) --out $(DEMO)/preview.png
	@echo "preview: $(DEMO)/preview.png  (the trainer that reads these shards comes next)"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) bench/build.py

clean:
	rm -rf shards bench/out .pytest_cache
