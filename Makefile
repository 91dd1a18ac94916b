# Two commands on a fresh machine: `make train` (setup + main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO := shards/demo
DEMO_BUILD := build --dataset synthetic --size 1000 --image-size 40 --infill tile --infill grey \
	--factual shuffle --factual mixed-rand --out $(DEMO)
RUNS := runs/demo
FIT := $(VENV)/bin/train fit --shards $(DEMO) --preset demo --workers 2
SEEDS ?= 0 1 2

.PHONY: install test train reproduce reproduce-small demo-shards cagan-demo lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

# Builds the demo shards once (a build folder without manifest.json is unfinished and is rebuilt), checks them,
# draws a contact sheet, trains Orig and CF(tile)+F(shuffle) on them (CPU, a few minutes) and prints the table.
demo-shards: install
	test -f $(DEMO)/manifest.json || $(VENV)/bin/augment $(DEMO_BUILD) --overwrite
	$(VENV)/bin/augment verify -q $(DEMO)
	$(VENV)/bin/augment preview $(DEMO) --out $(DEMO)/preview.png

train: demo-shards
	rm -rf $(RUNS)
	$(FIT) --seed 0 --out $(RUNS)/orig-s0
	$(FIT) --seed 0 --cf tile --f shuffle --out $(RUNS)/cf-tile-f-shuffle-s0
	$(VENV)/bin/train report $(RUNS) --out $(RUNS)/report.md

# The paper's comparison (docs/grids/paper.toml: 14 rows + the training-set-size curve) over 3 seeds on synthetic
# data at 32 px, two runs at a time (about 30 minutes on 2 cores). Writes runs/reproduce/REPORT.md and .html, and
# copies the report and its figures to docs/results-synthetic.md and docs/results-synthetic/.
REPRO := shards/reproduce
STUDY := runs/reproduce
reproduce: install
	test -f $(REPRO)/manifest.json || $(VENV)/bin/augment build --dataset synthetic --size 1000 --image-size 32 \
		--infill grey --infill random --infill shuffle --infill tile --factual random --factual shuffle \
		--factual mixed-rand --out $(REPRO) --overwrite -q
	$(VENV)/bin/train study --shards $(REPRO) --grid docs/grids/synthetic-cpu.toml --seeds 3 --jobs 2 --out $(STUDY)
	mkdir -p docs/results-synthetic
	cp $(STUDY)/fig*.png docs/results-synthetic/
	sed 's|](fig|](results-synthetic/fig|' $(STUDY)/REPORT.md > docs/results-synthetic.md

# The README's 3-seed table: the same two methods with 3x the data and 16 epochs (about 40 minutes on 2 cores).
LARGE := shards/demo-3000
FIT_LARGE := $(VENV)/bin/train fit --shards $(LARGE) --preset demo --epochs 16 --workers 2
reproduce-small: install
	test -f $(LARGE)/manifest.json || $(VENV)/bin/augment build --dataset synthetic --size 3000 --image-size 40 \
		--infill tile --infill grey --factual shuffle --factual mixed-rand --out $(LARGE) --overwrite
	rm -rf $(RUNS)-3seeds
	for s in $(SEEDS); do $(FIT_LARGE) --seed $$s --out $(RUNS)-3seeds/orig-s$$s || exit 1; \
		$(FIT_LARGE) --seed $$s --cf tile --f shuffle --out $(RUNS)-3seeds/cf-tile-f-shuffle-s$$s || exit 1; done
	$(VENV)/bin/train report $(RUNS)-3seeds --out $(RUNS)-3seeds/report.md

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every benchmark of docs/benchmarks.md, each measured side by side in one run (about 4 minutes on 2 quiet cores);
# `make bench QUICK=1` only checks that they run (1-3 minutes). Outputs go to bench/out/.
bench: install
	$(PY) bench/common.py
	$(PY) bench/build.py $(if $(QUICK),--quick)
	$(PY) bench/kernels.py $(if $(QUICK),--quick)
	$(PY) bench/loader.py $(if $(QUICK),--quick)
	$(PY) bench/scale.py $(if $(QUICK),--quick)
	$(PY) bench/trainer.py $(if $(QUICK),--quick)
	$(PY) bench/parity.py $(if $(QUICK),--quick)
	$(PY) bench/cagan.py --batch-sizes 1 8 $(if $(QUICK),--quick)

# Trains CAGAN on the demo shards' backgrounds (CPU, minutes), compares it with tile on held-out holes, draws
# original | hole | cagan | tile, and builds CF(cagan) shards with it.
CAGAN_DEMO := runs/cagan-demo
cagan-demo: demo-shards
	$(VENV)/bin/augment cagan train --shards $(DEMO) --preset demo --out $(CAGAN_DEMO)/demo.safetensors \
		--run-dir $(CAGAN_DEMO)/run
	$(VENV)/bin/augment cagan preview --shards $(DEMO) --weights $(CAGAN_DEMO)/demo.safetensors \
		--out $(CAGAN_DEMO)/preview.png
	$(VENV)/bin/augment build --dataset synthetic --size 1000 --image-size 40 --infill cagan --infill tile \
		--cagan-weights $(CAGAN_DEMO)/demo.safetensors --out $(CAGAN_DEMO)/shards --overwrite -q

clean:
	rm -rf shards runs bench/out .pytest_cache
