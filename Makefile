# SynShot: one entry point per job. Every target that needs the environment runs `setup` first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export PYTHONPATH := $(CURDIR)
# Idle OpenMP threads sleep instead of spinning: on a busy or oversubscribed CPU, spinning makes
# torch jobs 10-20x slower in wall time (measured, docs/render.md).
export OMP_WAIT_POLICY ?= PASSIVE

SETUP_STAMP := $(VENV)/.setup-done
APT_PACKAGES := slurmctld slurmd slurm-client munge slurmdbd mariadb-server libllvm19 curl

.PHONY: setup apt test test-fast demo data bench clean help

help:
	@grep -E '^## ' Makefile | sed 's/^## //'

## setup        create .venv and install the pinned stack (+ Debian packages when root)
setup: $(SETUP_STAMP)

$(SETUP_STAMP): requirements.txt requirements-dev.txt constraints.txt
	@$(MAKE) --no-print-directory apt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

apt:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then echo "apt: installing $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	else echo "apt: not root; make sure these Debian packages are installed: $(APT_PACKAGES)"; fi

## test         run the test suite (all but GPU-only tests)
test: setup
	$(PYTHON) -m pytest -q tests

## test-fast    unit tests only (skips tests marked slow or slurm)
test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow and not slurm" tests

clean:
	rm -rf runs results .cache .pytest_cache

## bench        run the benchmarks -> results/bench.json and a table
bench: setup
	$(PYTHON) -m synshot.bench

# ---- targets added by each area below (keep each area's targets together) ----

# ---- prior model + losses (synshot/model/, synshot/losses/, configs/model/, docs/model.md) ----
.PHONY: test-model bench-model
## test-model   the prior's and the losses' tests (add OVERFIT=1 for the slow ray-traced overfit test)
test-model: setup
	$(PYTHON) -m pytest -q tests/test_model.py tests/test_model_vq.py tests/test_model_sampler.py tests/test_model_io.py tests/test_losses.py $(if $(OVERFIT),tests/test_model_overfit.py,)

## bench-model  prior benchmarks only (tiny step time, parameters, Gaussians per part)
bench-model: setup
	$(PYTHON) -m synshot.bench --only model --out results/bench_model.json

# ---- slurm launch (slurm/, docs/slurm.md) ----
.PHONY: cluster-up cluster-down
## cluster-up   start the local SLURM cluster (root; NODES=1|2, GPUS=n fake GPUs/node); then: export SLURM_CONF=.cache/slurm/etc/slurm.conf
cluster-up:
	SYNSHOT_SLURM_NODES=$(or $(NODES),2) SYNSHOT_SLURM_GPUS=$(or $(GPUS),4) bash slurm/cluster/up.sh

## cluster-down stop the local SLURM cluster (cancels its jobs first; PURGE=1 also deletes its state)
cluster-down:
	bash slurm/cluster/down.sh $(if $(PURGE),--purge,)

# ---- inversion (synshot/invert/, data_tools/subject.py, docs/inversion.md) ----
.PHONY: invert drive subjects
INVERT_CONFIG ?= configs/invert/default.yaml
## invert       invert a subject: make invert SUBJECT=subjects/s0 [CKPT=prior.safetensors] [OUT=dir] [INVERT_CONFIG=yaml] [ARGS="k=v ..."]
invert: setup
	@test -n "$(SUBJECT)" || { echo "usage: make invert SUBJECT=subjects/NAME [CKPT=file] [OUT=dir]"; exit 2; }
	$(PYTHON) -m synshot.invert --subject $(SUBJECT) --config $(INVERT_CONFIG) $(if $(CKPT),--ckpt $(CKPT),) $(if $(OUT),--out $(OUT),) $(ARGS)

## drive        drive an avatar: make drive SUBJECT=subjects/s0 EXPR=seq.json|subjects/s1 [AVATAR=file] [OUT=driven.mp4] [PLY=dir: + world-space .ply per frame]
drive: setup
	@test -n "$(EXPR)" && test -n "$(SUBJECT)$(AVATAR)" || { echo "usage: make drive SUBJECT=subjects/NAME EXPR=seq.json|subjects/OTHER"; exit 2; }
	$(PYTHON) -m synshot.invert.drive --avatar $(or $(AVATAR),runs/invert/$(notdir $(SUBJECT))/avatar.safetensors) --expr $(EXPR) $(if $(OUT),--out $(OUT),) $(if $(PLY),--ply $(PLY) --compressed,) --side-by-side

SUBJECT_SEEDS ?= 3001 3002 3003
SUBJECT_SIZE ?= 128
## subjects     render held-out subjects to subjects/ (SUBJECT_SEEDS="3001 3002 3003": test 3001-3020, validation 2001-2010)
subjects: setup
	for s in $(SUBJECT_SEEDS); do $(PYTHON) -m data_tools.subject --seed $$s --size $(SUBJECT_SIZE) --out subjects/s$$s || exit 1; done

# ---- data (synshot/data/, data_tools/synth.py, data_tools/inspect.py, docs/data.md) ----
.PHONY: data inspect
DATA_CONFIG ?= configs/data/tiny.yaml
DATA_OUT ?= data/tiny
## data         render the synthetic dataset (DATA_CONFIG=configs/data/tiny.yaml DATA_OUT=data/tiny [DATA_ARGS="k=v ..."]), then validate it
data: setup
	$(PYTHON) -m data_tools.synth --config $(DATA_CONFIG) --out $(DATA_OUT) $(DATA_ARGS)
	$(PYTHON) -m data_tools.inspect $(DATA_OUT) --sheet results/data_sheet.png

## inspect      validate a dataset and draw a contact sheet (DATA_OUT=data/tiny -> results/data_sheet.png)
inspect: setup
	$(PYTHON) -m data_tools.inspect $(DATA_OUT) --sheet results/data_sheet.png

# ---- training (train/, configs/train/, synshot/bench/train.py, docs/training.md) ----
.PHONY: train export tensorboard
CONFIG ?= configs/train/tiny.yaml
NPROC ?= 1
TB_PORT ?= 6006
TB_HOST ?= 127.0.0.1
## train        train the prior: make train [CONFIG=configs/train/tiny.yaml] [NPROC=1|n: torchrun] [ARGS="key=value ..."]
train: setup
	$(if $(filter 1,$(NPROC)),$(PYTHON) -m train,$(PYTHON) -m torch.distributed.run --standalone --nproc_per_node $(NPROC) -m train) --config $(CONFIG) $(ARGS)

## export       consolidate a run's latest checkpoint: make export RUN=runs/tiny [OUT=runs/tiny/prior.safetensors]
export: setup
	@test -n "$(RUN)" || { echo "usage: make export RUN=runs/NAME [OUT=file.safetensors]"; exit 2; }
	$(PYTHON) -m train.export --ckpt $(RUN) --out $(or $(OUT),$(RUN)/prior.safetensors)

## tensorboard  serve TensorBoard: make tensorboard [RUN=runs/tiny] (default: all of runs/) [TB_PORT=6006 TB_HOST=127.0.0.1]
tensorboard: setup
	$(BIN)/tensorboard --logdir $(if $(RUN),$(RUN)/tb,runs) --port $(TB_PORT) --host $(TB_HOST)

# ---- demo and evaluation (synshot/demo.py, synshot/eval/, docs/evaluation.md) ----
.PHONY: demo eval tune
DEMO_CONFIG ?= configs/demo/tiny.yaml
## demo         the whole pipeline at toy scale on a CPU -> runs/demo/report.md (re-running reuses finished stages)
demo: setup
	$(PYTHON) -m synshot.demo --config $(DEMO_CONFIG) $(ARGS)

## eval         demo pipeline on 10 test subjects + the paper's ablations (same budget and tuning) + baselines -> runs/demo/eval/report.md
eval: setup
	$(PYTHON) -m synshot.demo --config configs/demo/eval.yaml $(ARGS)

## tune         equal-budget search on the validation subjects (after `make eval` rendered them) -> runs/tune/tuning.md
tune: setup
	nice -n 10 $(PYTHON) -m synshot.eval.tune --config configs/eval/tune_tiny.yaml 'eval_overrides=["prior=runs/demo/prior.safetensors"]' $(ARGS)

# ---- renderer (synshot/render/, synshot/bench/render.py, docs/render.md) ----
.PHONY: test-render bench-render
## test-render  renderer tests (GPU parity test runs only where CUDA is available)
test-render: setup
	$(PYTHON) -m pytest -q tests/test_render.py

## bench-render renderer timings/peak memory -> results/bench-render.json
bench-render: setup
	$(PYTHON) -m synshot.bench --only render --out results/bench-render.json

# ---- head model + ground-truth ray tracer (synshot/head/, synshot/raytrace/, docs/head.md) ----
.PHONY: head-sheet bench-gt
## head-sheet   ray-traced contact sheet of sampled identities x expressions -> docs/img/population.png
head-sheet: setup
	$(PYTHON) -m synshot.head.contact_sheet --out docs/img/population.png --seed 4 --uv-layout docs/img/uv_layout.png

## bench-gt     ground-truth render speed (views/s at 128/256 px, 16 spp) and head model timings
bench-gt: setup
	$(PYTHON) -m synshot.raytrace.bench
