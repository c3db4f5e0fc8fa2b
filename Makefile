# temde: every target creates the environment it needs first (fresh machine: `make train` or `make test`).
SHELL := /bin/bash
PYTHON ?= python3
# Third-party packages live in one environment cached under ~/.cache/temde, keyed by requirements.txt, that every
# clone on the machine shares (torch alone is ~5 GB). It never holds temde itself: each checkout gets its own thin
# .venv (seconds to make) that layers the shared packages under *this* checkout's code, so no clone can re-point
# another's imports.
VENV_CACHE ?= $(HOME)/.cache/temde
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-12)
VENV_DIR := $(VENV_CACHE)/venv-$(REQ_HASH)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.temde-$(REQ_HASH)

CONFIG ?= synthetic_sgr_temde
EXPERIMENT := $(if $(CONFIG),experiment=$(CONFIG),)
ARGS ?=
CKPT ?=
# No shared default: `make eval` needs DATA; `make reproduce` uses the table's real data unless DATA=synthetic.
DATA ?=
TABLE ?= f30k
SWEEP ?= temde_bayes

.PHONY: venv train eval test lint reproduce sweep bench bench-gpu clean-venv

venv: $(STAMP)

# No file prerequisite: the directory name already carries the hash of requirements.txt, and a fresh clone's
# newer mtime must not trigger a rebuild of a venv other clones share.
$(VENV_DIR)/.complete:
	@echo ">> creating $(VENV_DIR) (first time only: about 7 minutes, ~6 GB with the CUDA build of torch)"
	rm -rf $(VENV_DIR)
	$(PYTHON) -m venv $(VENV_DIR)
	$(VENV_DIR)/bin/pip install -q --upgrade pip
	$(VENV_DIR)/bin/pip install -q -r requirements.txt
	touch $@

$(STAMP): $(VENV_DIR)/.complete
	rm -rf $(VENV)
	$(VENV_DIR)/bin/python -m venv --without-pip $(VENV)
	$(PY) scripts/link_venv.py $(VENV_DIR) $(CURDIR)
	touch $@

## Train (default: SGR + T-EMDE on the built-in synthetic dataset, CPU, minutes). CONFIG=<experiment name>
train: venv
	$(PY) -m temde.train $(EXPERIMENT) $(ARGS)

## Evaluate checkpoints: make eval CKPT=a.ckpt[,b.ckpt] DATA=f30k|coco|synthetic (several = ensemble)
eval: venv
	$(if $(and $(CKPT),$(DATA)),,$(error usage: make eval CKPT=path[,path2] DATA=f30k|coco|synthetic (DATA: the split the checkpoints are evaluated on; nothing is assumed)))
	$(PY) -m temde.evaluate 'ckpt=[$(CKPT)]' data=$(DATA) $(ARGS)

## Lint + unit tests (what CI runs)
test: venv
	$(VENV_DIR)/bin/ruff check .
	$(PY) -m pytest -q $(ARGS)

lint: venv
	$(VENV_DIR)/bin/ruff check .

## Reproduce a paper table: make reproduce TABLE=f30k|coco1k|coco5k [DATA=synthetic] [ARGS=--dry-run]
## (default: the table's real data; stops with one line when it is missing)
reproduce: venv
	$(PY) scripts/reproduce.py --table $(TABLE) --data $(or $(DATA),real) $(ARGS)

## wandb sweep (sweeps/$(SWEEP).yaml): creates the sweep and runs an agent
sweep: venv
	$(PY) scripts/sweep.py sweeps/$(SWEEP).yaml $(ARGS)

## Benchmarks: latency (T-EMDE vs self-attention) and scoring speed vs the official per-caption loop, at 1 and 2
## threads; JSON under experiments/benchmarks/ (flagged "publishable": false when the load average exceeds 1.5)
bench: venv
	$(PY) scripts/bench_latency.py $(ARGS)
	$(PY) scripts/bench_eval.py --threads 1 $(ARGS)
	$(PY) scripts/bench_eval.py --threads 2 $(ARGS)

## One-shot GPU check (< 8 min on one GPU): make bench-gpu [ARGS=--smoke for the CPU dry run]
bench-gpu: venv
	$(PY) scripts/bench_gpu.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
