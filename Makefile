# Two commands on a fresh machine: `make train` (setup + main job) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO := shards/demo
DEMO_BUILD := build --dataset synthetic --size 3000 --image-size 32 --infill tile --infill grey \
	--factual shuffle --factual mixed-rand --out $(DEMO)
RUNS := runs/demo
# docs/grids/demo.toml: Orig and CF(tile)+F(shuffle) with the demo preset, two runs at a time on the 2 cores
DEMO_STUDY := $(VENV)/bin/train study --shards $(DEMO) --grid docs/grids/demo.toml --jobs 2

# Earlier results are never deleted: a folder about to be rewritten from scratch is moved aside to
# <folder>.<date>-<time>, and the line says where (delete it when you no longer need it).
set_aside = if [ -e $(1) ]; then old=$(1).$$(date +%Y%m%d-%H%M%S); mv $(1) $$old; \
	echo "make: moved the earlier $(1) to $$old: $(2) (delete it when you no longer need it)"; fi

.PHONY: install test train reproduce reproduce-small demo-shards cagan-demo lint bench bench-gpu photos masks shifted fgap waterbirds bank clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

# A build is redone when the code that writes it changed (e.g. a new shard format), else kept.
AUGMENT_SOURCES := $(wildcard augment/*.py augment/*/*.py)

# Builds the demo shards (a build folder without manifest.json is unfinished and is rebuilt), checks them and
# draws a contact sheet; `train` then trains Orig and CF(tile)+F(shuffle) side by side on them and prints the
# table (3 min 35 s on 2 quiet cores with .venv installed and the shards built, at ed8072a).
$(DEMO)/manifest.json: $(STAMP) $(AUGMENT_SOURCES)
	$(VENV)/bin/augment $(DEMO_BUILD) --overwrite

demo-shards: install $(DEMO)/manifest.json
	$(VENV)/bin/augment verify -q $(DEMO)
	$(VENV)/bin/augment preview $(DEMO) --out $(DEMO)-preview.png  # beside the build: --overwrite only touches builds

train: demo-shards
	@$(call set_aside,$(RUNS),make train trains anew)
	$(DEMO_STUDY) --seeds 1 --out $(RUNS)
	$(VENV)/bin/train report $(RUNS)/runs --out $(RUNS)/report.md
	@echo "make train: wrote $(RUNS)/report.md and its pictures" \
		$$(sed -n 's|^!\[[^]]*\](\(.*\))$$|$(RUNS)/\1|p' $(RUNS)/report.md | paste -sd' ' -) \
		"(the build's contact sheet: $(DEMO)-preview.png)"

# The paper's comparison (docs/grids/paper.toml: 14 rows + the training-set-size curve) over 3 seeds on synthetic
# data at 32 px, two runs at a time (12 min 29 s on 2 quiet cores at 6061d89). Writes runs/reproduce/REPORT.md and .html, and
# copies the report and its figures to docs/results-synthetic.md and docs/results-synthetic/.
REPRO := shards/reproduce
STUDY := runs/reproduce
$(REPRO)/manifest.json: $(STAMP) $(AUGMENT_SOURCES)
	@$(call set_aside,$(STUDY),its runs learnt from the old build)
	$(VENV)/bin/augment build --dataset synthetic --size 1000 --image-size 32 \
		--infill grey --infill random --infill shuffle --infill tile --factual random --factual shuffle \
		--factual mixed-rand --out $(REPRO) --overwrite -q

reproduce: install $(REPRO)/manifest.json
	$(VENV)/bin/train study --shards $(REPRO) --grid docs/grids/synthetic-cpu.toml --seeds 3 --jobs 2 --out $(STUDY)
	mkdir -p docs/results-synthetic
	cp $(STUDY)/fig*.png docs/results-synthetic/
	sed 's|](fig|](results-synthetic/fig|' $(STUDY)/REPORT.md > docs/results-synthetic.md

# docs/training.md's 3-seed table: make train's two methods over seeds 0, 1, 2 (9 min 12 s on quiet cores at 72e2138).
reproduce-small: demo-shards
	@$(call set_aside,$(RUNS)-3seeds,make reproduce-small trains anew)
	$(DEMO_STUDY) --seeds 3 --out $(RUNS)-3seeds
	$(VENV)/bin/train report $(RUNS)-3seeds/runs --out $(RUNS)-3seeds/report.md

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every benchmark of docs/benchmarks.md, each measured side by side in one run (14 min 52 s at 8a74ce7 on 2 cores of an
# AMD EPYC, about 5 of them in bench/parity.py, which trains six small models; bench/zoo.py and bench/fills.py, added
# since, take about 3 more); `make bench QUICK=1` only checks that they run (1-3 minutes). Outputs go to bench/out/.
bench: install
	$(PY) bench/common.py
	$(PY) bench/build.py $(if $(QUICK),--quick)
	$(PY) bench/kernels.py $(if $(QUICK),--quick)
	$(PY) bench/loader.py $(if $(QUICK),--quick)
	$(PY) bench/scale.py $(if $(QUICK),--quick)
	$(PY) bench/trainer.py $(if $(QUICK),--quick)
	$(PY) bench/parity.py $(if $(QUICK),--quick)
	$(PY) bench/zoo.py $(if $(QUICK),--quick)
	$(PY) bench/fills.py --networks $(if $(QUICK),--quick)
	$(PY) bench/cagan.py --batch-sizes 1 8 $(if $(QUICK),--quick)

# The GPU benchmark and checks for a device machine (bench/gpu.py, not run on a GPU yet; sized for under 8 minutes on
# one before the model families, whose 6 eager runs are not timed yet): CAGAN at batch 1/32/64 in bf16, train fit of
# ResNet-50 with --amp on 224 crops with CF+F fields against the A100 anchor, train fit --amp of six model families
# (torchvision and timm ResNet-50, ConvNeXt-T, ViT-S/16, EfficientNet-B0, BiT-S-R50x1), a one-process NCCL DDP run,
# and pytest -m gpu. `make bench-gpu COMPILE=1` adds each family with --compile (6 compilations, a minute or more
# each: more than one 10-minute device command may allow). Without CUDA it runs its CPU paths at toy sizes (91 s on 2
# cores of an AMD EPYC, `.venv/bin/python bench/gpu.py --quick --skip-tests`).
bench-gpu: install
	$(PY) bench/gpu.py $(if $(QUICK),--quick) $(if $(COMPILE),,--no-compile)

# docs/results-masks.md: IoU of --masks-from grabcut and of the box against the synthetic true masks, and F(shuffle)
# trained on box-only vs grabcut masks over 3 seeds (2 builds of make train's size, 6 runs two at a time).
masks: install
	$(PY) bench/masks.py --train

# docs/results-shifted.md: the shifted test splits of --shifted-tests against synthetic's native ones, for Orig and
# CF(tile)+F(shuffle) over 3 seeds (one build of 2000 training images at 32 px, 6 runs two at a time).
shifted: install
	$(PY) bench/shifted.py

# docs/results-photos.md: F(shuffle) pooled vs per-image, and --copies 1/4/8, on an IN-9-layout dataset whose
# backgrounds are scikit-image's sample photographs (about 14 minutes on 2 cores; outputs in bench/out/photos/).
photos: install
	$(PY) bench/photos.py $(if $(QUICK),--quick)

# docs/results-fgap.md: where the factual images' effect goes, stored F against the same F computed online, one factor
# at a time (bench/fgap.py: two photo fixtures with IN-9's release folder names, objects of one colour and textured
# objects, 3 seeds per row, two runs at a time; about 45 minutes on 2 cores for the two, from the sections' times,
# before the F(bank), CF(telea)+F(shuffle) and CF(grey)+F(shuffle) rows: they add 9 runs a fixture, not re-timed).
fgap: install
	$(PY) bench/fgap.py $(if $(QUICK),--quick)
	$(PY) bench/fgap.py --objects texture --name fgap-texture $(if $(QUICK),--quick)

# Factual images on real backgrounds (issue #33): Orig, F(mixed-rand), F(bank, any) and F(bank, same-class-location)
# on a camera-trap fixture in CCT's layout (locations with their own photo backgrounds, empty frames, cis/trans
# locations), ResNet-8 at 32 px, 3 seeds, macro AUC on cis_test and trans_test (bench/bank.py, 5.4 minutes on 2 cores).
bank: install
	$(PY) bench/bank.py $(if $(QUICK),--quick)

# docs/results-waterbirds.md: Orig, F(shuffle), F(mixed-rand), CF(tile) and CF+F on a Waterbirds-layout fixture (soft
# masks, bias 0.95), a ResNet-18 from scratch at 64 px, one seed (bench/waterbirds.py, about 17 minutes on 2 cores).
waterbirds: install
	$(PY) bench/waterbirds.py $(if $(QUICK),--quick)

# Trains CAGAN on the backgrounds of a 40 px synthetic build (CPU, minutes), compares it with tile on held-out holes,
# draws original | hole | cagan | tile, and builds CF(cagan) shards with it.
CAGAN_DEMO := runs/cagan-demo
CAGAN_SOURCE := shards/cagan-source
cagan-demo: install
	test -f $(CAGAN_SOURCE)/manifest.json || $(VENV)/bin/augment build --dataset synthetic --size 1000 \
		--image-size 40 --infill tile --out $(CAGAN_SOURCE) --overwrite -q
	$(VENV)/bin/augment cagan train --shards $(CAGAN_SOURCE) --preset demo --out $(CAGAN_DEMO)/demo.safetensors \
		--run-dir $(CAGAN_DEMO)/run
	$(VENV)/bin/augment cagan preview --shards $(CAGAN_SOURCE) --weights $(CAGAN_DEMO)/demo.safetensors \
		--out $(CAGAN_DEMO)/preview.png
	$(VENV)/bin/augment build --dataset synthetic --size 1000 --image-size 40 --infill cagan --infill tile \
		--cagan-weights $(CAGAN_DEMO)/demo.safetensors --out $(CAGAN_DEMO)/shards --overwrite -q

clean:
	rm -rf shards runs bench/out .pytest_cache
