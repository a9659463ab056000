# SynShot: one target per pipeline stage, in pipeline order (`make help`). Every target that needs the
# environment runs `setup` first, and calls the same code as the `synshot` command.
#
# Variables (override on the command line, e.g. `make train RUN=runs/small TRAIN_CONFIG=configs/train/small.yaml`):
#   <STAGE>_CONFIG  the stage's YAML config          RUN      the run folder train/export/invert/drive share
#   ARGS            key=value overrides for a stage  OUT      where a stage writes (default: inside RUN)
#   SUBJECT, EXPR   subject folder to invert / expressions to drive it with
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
SYNSHOT := $(PYTHON) -m synshot
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export PYTHONPATH := $(CURDIR)
# Idle OpenMP threads sleep instead of spinning: on a busy or oversubscribed CPU, spinning makes
# torch jobs 10-20x slower in wall time (measured, docs/render.md).
export OMP_WAIT_POLICY ?= PASSIVE

SETUP_STAMP := $(VENV)/.setup-done
APT_PACKAGES := slurmctld slurmd slurm-client munge slurmdbd mariadb-server libllvm19 curl chromium

# the run layout (synshot/runs.py): runs/<name>/{checkpoints,tb,prior.safetensors,invert/<subject>}
RUN ?= runs/tiny
DATA_CONFIG ?= configs/data/tiny.yaml
DATA_OUT ?= data/tiny
TRAIN_CONFIG ?= configs/train/tiny.yaml
NPROC ?= 1
INVERT_CONFIG ?= configs/invert/tiny.yaml
SUBJECT_SEEDS ?= 3001 3002 3003
SUBJECT_SIZE ?= 128
SUBJECT ?= subjects/s3001
EXPR ?= subjects/s3002
DEMO_CONFIG ?= configs/demo/tiny.yaml
EVAL_CONFIG ?= configs/demo/eval.yaml
TUNE_CONFIG ?= configs/eval/tune_tiny.yaml
PLAN_CONFIG ?= configs/train/paper.yaml
TB_PORT ?= 6006
TB_HOST ?= 127.0.0.1

.PHONY: help setup apt data inspect subjects track head-sheet train tensorboard export prior invert drive view eval tune demo \
	bench bench-model bench-render bench-gt plan gpu-check test test-fast test-model test-render faults cluster-up cluster-down clean

help:
	@awk '/^##@ /{printf "\n%s\n", substr($$0, 5); next} /^## /{print "  " substr($$0, 4)}' $(MAKEFILE_LIST)

##@ setup
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

##@ data
## data         render the synthetic dataset to DATA_OUT (DATA_CONFIG=configs/data/tiny.yaml), then validate it
data: setup
	$(SYNSHOT) data synth --config $(DATA_CONFIG) --out $(DATA_OUT) $(ARGS)
	$(SYNSHOT) data inspect $(DATA_OUT) --out results/data_sheet.png

## inspect      validate DATA_OUT and draw a contact sheet -> results/data_sheet.png
inspect: setup
	$(SYNSHOT) data inspect $(DATA_OUT) --out results/data_sheet.png $(ARGS)

## subjects     render held-out subjects to subjects/s<seed> (SUBJECT_SEEDS="3001 3002 3003": test 3001-3020, validation 2001-2010)
subjects: setup
	for s in $(SUBJECT_SEEDS); do $(SYNSHOT) data subject --seed $$s --size $(SUBJECT_SIZE) --out subjects/s$$s $(ARGS) || exit 1; done

## track        fit the head model to photos -> a subject folder: make track PHOTOS=dir OUT=subjects/NAME
track: setup
	@test -n "$(PHOTOS)" && test -n "$(OUT)" || { echo "usage: make track PHOTOS=dir OUT=subjects/NAME"; exit 2; }
	$(SYNSHOT) track $(PHOTOS) --out $(OUT) $(ARGS)

## head-sheet   ray-traced contact sheet of sampled identities x expressions -> docs/img/population.png
head-sheet: setup
	$(SYNSHOT) head sheet --out docs/img/population.png seed=4 uv_layout=docs/img/uv_layout.png $(ARGS)

##@ train
## train        train the prior into RUN (TRAIN_CONFIG=configs/train/tiny.yaml, NPROC=1|n: torchrun)
train: setup
	$(if $(filter 1,$(NPROC)),$(PYTHON) -m train,$(PYTHON) -m torch.distributed.run --standalone --nproc_per_node $(NPROC) -m train) \
	  --config $(TRAIN_CONFIG) out_dir=$(patsubst %/,%,$(dir $(RUN))) name=$(notdir $(RUN)) $(ARGS)

## tensorboard  serve TensorBoard of RUN (RUN= for all of runs/; TB_PORT=6006 TB_HOST=127.0.0.1)
tensorboard: setup
	$(BIN)/tensorboard --logdir $(if $(RUN),$(RUN)/tb,runs) --port $(TB_PORT) --host $(TB_HOST)

##@ export
## export       consolidate RUN's latest checkpoint -> RUN/prior.safetensors
export: setup
	$(SYNSHOT) export $(RUN) $(if $(OUT),--out $(OUT),) $(ARGS)

## prior        reproduce the shipped prior (synshot/priors/small.md): configs/data/small.yaml -> data/small, configs/train/small.yaml -> runs/small/prior.safetensors
prior: setup
	$(SYNSHOT) data synth --config configs/data/small.yaml --out data/small
	OMP_NUM_THREADS=1 $(PYTHON) -m train --config configs/train/small.yaml out_dir=runs name=small
	$(SYNSHOT) export runs/small
	$(SYNSHOT) prior check runs/small/prior.safetensors

##@ invert
## invert       invert SUBJECT with RUN's prior (none exported: the shipped synshot/priors/small.safetensors) -> RUN/invert/<subject>/ (INVERT_CONFIG=configs/invert/tiny.yaml)
invert: setup
	$(SYNSHOT) invert $(SUBJECT) --config $(INVERT_CONFIG) --run $(RUN) $(if $(OUT),--out $(OUT),) $(ARGS)

##@ drive
## drive        drive RUN's avatar of SUBJECT with EXPR (a sequence JSON or another subject) -> driven.mp4 [PLY=dir: + world-space .ply per frame]
drive: setup
	$(SYNSHOT) drive --subject $(SUBJECT) --expr $(EXPR) run=$(RUN) --side-by-side $(if $(OUT),--out $(OUT),) $(if $(PLY),--ply $(PLY) --compressed,) $(ARGS)

##@ view
## view         RUN's avatar of SUBJECT (or AVATAR=file) in the browser at http://127.0.0.1:8080, with SUBJECT's photos [EXPR="seq.json subjects/s1"] [PORT=8080]
view: setup
	$(SYNSHOT) view $(if $(AVATAR),$(AVATAR),) --subject $(SUBJECT) run=$(RUN) $(foreach e,$(EXPR),--expr $(e)) $(if $(PORT),port=$(PORT),) $(if $(OUT),--out $(OUT),) $(ARGS)

##@ eval
## eval         demo pipeline on 10 test subjects + the paper's ablations (same budget and tuning) + baselines -> runs/demo/eval/report.md
eval: setup
	$(SYNSHOT) demo --config $(EVAL_CONFIG) $(ARGS)

## tune         equal-budget search on the validation subjects (after `make eval` rendered them) -> runs/tune/tuning.md
tune: setup
	nice -n 10 $(SYNSHOT) eval tune --config $(TUNE_CONFIG) 'eval_overrides=["prior=runs/demo/prior.safetensors"]' $(ARGS)

##@ demo
## demo         the whole pipeline at toy scale on a CPU -> runs/demo/report.md (re-running reuses finished stages)
demo: setup
	$(SYNSHOT) demo --config $(DEMO_CONFIG) $(ARGS)

##@ bench
## bench        every benchmark -> results/bench.json and a table
bench: setup
	$(SYNSHOT) bench $(ARGS)

## bench-model  prior benchmarks only (tiny step time, parameters, Gaussians per part)
bench-model: setup
	$(SYNSHOT) bench --only model --out results/bench_model.json

## bench-render renderer timings/peak memory -> results/bench-render.json
bench-render: setup
	$(SYNSHOT) bench --only render --out results/bench-render.json

## bench-gt     ground-truth render speed (views/s at 128/256 px, 16 spp) and head model timings
bench-gt: setup
	$(PYTHON) -m synshot.raytrace.bench
## plan         capacity plan from results/bench.json + configs/plan/assumptions.yaml: make plan [PLAN_CONFIG=configs/train/paper.yaml] [NODES=4] [GPUS=8] [BENCH=results/bench.json] [ARGS="gpu_step_s=0.5"]
plan: setup
	$(SYNSHOT) plan train_config=$(PLAN_CONFIG) nodes=$(or $(NODES),4) gpus_per_node=$(or $(GPUS),8) bench=$(or $(BENCH),results/bench.json) $(ARGS)

## gpu-check    CUDA machines only: gpu tests, render/model/invert benches, 512 px training fp32/bf16 (+2-GPU NCCL) -> results/gpu_check.json
gpu-check: setup
	$(PYTHON) -m synshot.bench.gpu_check --out results/gpu_check.json

##@ test
## test         the test suite (all but GPU-only tests)
test: setup
	$(PYTHON) -m pytest -q --durations=25 tests

## test-fast    unit tests only (skips tests marked slow or slurm)
test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow and not slurm" tests

## test-model   the prior's and the losses' tests (OVERFIT=1 adds the slow ray-traced overfit test)
test-model: setup
	$(PYTHON) -m pytest -q tests/test_model.py tests/test_model_vq.py tests/test_model_sampler.py tests/test_model_io.py tests/test_losses.py $(if $(OVERFIT),tests/test_model_overfit.py,)

## test-render  renderer tests (the GPU parity test runs only where CUDA is available)
test-render: setup
	$(PYTHON) -m pytest -q tests/test_render.py

## faults       the fault catalogue (damaged data/weights, resume, output folders, inputs) -> case/result table
faults: setup
	$(PYTHON) -m pytest -q -m faults --fault-table tests/test_fsio.py tests/test_train_faults.py \
	  tests/test_data_faults.py tests/test_invert_faults.py tests/test_output_faults.py

##@ cluster
## cluster-up   start the local SLURM cluster (root; NODES=1|2, GPUS=n fake GPUs/node); then: export SLURM_CONF=.cache/slurm/etc/slurm.conf
cluster-up:
	SYNSHOT_SLURM_NODES=$(or $(NODES),2) SYNSHOT_SLURM_GPUS=$(or $(GPUS),4) bash slurm/cluster/up.sh

## cluster-down stop the local SLURM cluster (cancels its jobs first; PURGE=1 also deletes its state)
cluster-down:
	bash slurm/cluster/down.sh $(if $(PURGE),--purge,)

## clean        delete runs/, results/ and caches
clean:
	rm -rf runs results .cache .pytest_cache
