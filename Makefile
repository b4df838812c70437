# Two commands for a fresh machine: `make repro` (run the pipeline) and `make test`.
# Everything else here is what those two need, plus a few conveniences.

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Nothing may try the network: no telemetry, no model hub.
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_LOGGING_LEVEL ?= WARNING
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: metrics setup lock repro test test-fast lint bench gpu-kit grid objectives-grid sql-grid server deploy clean-outputs help results deps push pull compare

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# torch first and pinned: 2.13.0 is a local CPU wheel; an unpinned torch pulls CUDA. Every
# package is installed at the version in constraints.txt (`make lock` resolves them anew).
TORCH := torch==2.13.0
PIP_INSTALL := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
LOCK_EXTRAS := dev,textworld

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP_INSTALL) $(TORCH)
	$(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

lock:  ## resolve the exact versions a fresh set-up installs into constraints.txt (after editing pyproject.toml)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m tools.lock --out constraints.txt $(TORCH) '.[$(LOCK_EXTRAS)]'

.dvc/config:
	@if [ -d .git ]; then $(BIN)/dvc init -q; else $(BIN)/dvc init -q --no-scm; fi
	$(BIN)/dvc config core.analytics false

setup: $(STAMP) .dvc/config  ## create .venv, install the project, initialise DVC if needed

# STAGES names targets to reproduce with what they depend on (e.g. STAGES=internalize:
# tasks -> warm-up -> mine -> internalize); TRACK runs one track alone (agents, sql, pghs, vision, tables,
# textworldexpress: needs Java 17);
# both empty: every stage.
STAGES ?=
TRACK ?=
TRACK_agents := evaluate internalize wording rl selskill distill
TRACK_sql := sql_tasks sql_real sql_collect sql_evaluate sql_grid
TRACK_pghs := pghs
TRACK_vision := vision_eval
TRACK_tables := table_rl
TRACK_textworldexpress := twx_internalize twx_internalize_seeds twx_rl twx_play@twx_warmup

# An unknown TRACK stops make before anything runs, the set-up included.
ifneq ($(TRACK),)
ifeq ($(TRACK_$(TRACK)),)
$(error unknown TRACK=$(TRACK): agents, sql, pghs, vision, tables or textworldexpress)
endif
endif

repro: setup  ## run the pipeline (dvc repro); STAGES=... or TRACK=agents|sql|pghs|vision|tables|textworldexpress for a part of it
	$(BIN)/dvc repro $(STAGES) $(TRACK_$(TRACK))

# Two pytest-xdist workers, handed 2 tests at a time: one runs the shared micro pipeline (one
# stage at a time) and the grid test, the other the unit tests and then the other e2e tests
# (tests/conftest.py orders them). TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

test: setup  ## run the test suite
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --maxschedchunk 2 --durations=15)

# For day-to-day work: the unit tests without those marked slow (no end-to-end `dvc repro`, no
# servers, no model trained for a parity check). `make test` runs everything and is what CI runs.
test-fast: setup  ## the unit tests without the slow ones (no dvc repro, no servers); make test runs all
	$(BIN)/python -m pytest -m "not slow" --ignore=tests/e2e $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --durations=10)

# Prints the default DVC remote's URL as DVC resolves it (`dvc remote list`: name, URL, "(default)").
DEFAULT_REMOTE = $(BIN)/dvc remote list 2>/dev/null | awk '$$3 == "(default)" {print $$2}'
NO_REMOTE = echo "no default DVC remote: dvc remote add -d NAME URL" >&2; exit 2

push: setup  ## upload every output in dvc.lock to the DVC remote (default: ../distillery-dvc-store)
	@url=$$($(DEFAULT_REMOTE)); if [ -z "$$url" ]; then $(NO_REMOTE); fi; echo "pushing to $$url" >&2
	@$(BIN)/python -m tools.push_check
	$(BIN)/dvc push

pull: setup  ## download every output in dvc.lock from the DVC remote; dvc repro then runs nothing
	@url=$$($(DEFAULT_REMOTE)); if [ -z "$$url" ]; then $(NO_REMOTE); fi; \
	case "$$url" in *://*) ;; *) if [ ! -d "$$url" ]; then echo "the DVC remote $$url does not exist: run make push where the outputs are, or point the remote elsewhere (dvc remote modify --local shared url URL)" >&2; exit 2; fi;; esac; \
	echo "pulling from $$url" >&2
	$(BIN)/dvc pull

# The experiments side by side, only the params and metrics that differ, in 120 columns.
COMPARE_ARGS ?= --only-changed --drop 'Created|State|Executor|.*seconds' --precision 3

# Each track's headline metrics files (a track's own `dvc metrics show`).
METRICS_sql = $(wildcard metrics/sql_*.json)
METRICS_vision = $(wildcard metrics/vision_*.json)
METRICS_tables = $(wildcard metrics/table_*.json)
METRICS_textworldexpress = $(wildcard metrics/twx/*.json)
METRICS_pghs = $(wildcard metrics/pghs.json)
METRICS_agents = $(filter-out $(METRICS_sql) $(METRICS_vision) $(METRICS_tables) $(METRICS_pghs),$(wildcard metrics/*.json))

metrics:  ## every headline metric, a file to a line (dvc metrics show), or TRACK=agents|sql|pghs|vision|tables|textworldexpress for one track's
	@if [ -n "$(TRACK)" ] && [ -z "$(strip $(METRICS_$(TRACK)))" ]; then echo "no metrics for TRACK=$(TRACK) yet: make repro TRACK=$(TRACK)" >&2; exit 2; fi
	@if [ -z "$(TRACK)" ] && [ -z "$(wildcard metrics/*.json metrics/*/*.json)" ]; then echo "no metrics yet: make repro" >&2; exit 2; fi
	@$(BIN)/python -m tools.metrics_view --width 120 $(METRICS_$(TRACK))

compare:  ## dvc exp show of the workspace and its experiments, what changed only
	COLUMNS=120 $(BIN)/dvc exp show $(COMPARE_ARGS)

results:  ## copy reports/claims.md's tables into docs/results.md (after make repro)
	$(BIN)/python -m tools.results

deps:  ## rewrite the stages' code dependencies in dvc.yaml from their imports
	$(BIN)/python -m tools.stage_deps --fix

lint:  ## ruff over the code
	$(BIN)/ruff check src stages flows tests bench tools

bench: setup  ## the benchmarks in bench/ (each prints ratios against a peer measured in the same run)
	$(PIP_INSTALL) -e '.[textworld]'  # the environment benchmark's peer (from the package registry)
	$(BIN)/python bench/env_throughput.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/rollout_throughput.py
	$(BIN)/python bench/pghs_scale.py
	$(BIN)/python bench/gate_throughput.py
	$(BIN)/python bench/vision_decoding.py

# What bench/gpu_check.py needs on a lent GPU machine (docs/performance.md, "The GPU path"):
# the agent track's inputs, and polars' wheels for that machine's Python 3.12. It has torch,
# transformers and accelerate, and nothing can be installed there from the network.
GPU_KIT ?= gpu_kit
gpu-kit: setup  ## the inputs and wheels bench/gpu_check.py needs on a lent GPU machine, in gpu_kit/
	$(BIN)/dvc repro collect@oracle
	rm -rf $(GPU_KIT) && mkdir -p $(GPU_KIT)/inputs $(GPU_KIT)/wheels
	cp data/tasks/tasks.parquet data/trajectories/oracle/episodes.parquet data/trajectories/oracle/steps.parquet $(GPU_KIT)/inputs/
	$(BIN)/pip download --disable-pip-version-check -q --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d $(GPU_KIT)/wheels "polars==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("polars"))')"
	@du -sh $(GPU_KIT)

# The recorded grid (reports/internalize_grid.md) ran params.yaml's internalize section, 2 runs at a time.
GRID_ARGS ?= --jobs 2 --replace

grid: setup  ## internalization grid: 8 cells x 3 seeds as queued dvc experiments (after make repro)
	$(BIN)/python -m flows.grid $(GRID_ARGS)

# The objectives grid: GRPO/GiGPO/SIRI, OPD/AOPD/SCOPE/GKD x {strong, weak} start, and SelSkill, as queued dvc experiments.
OBJECTIVES_GRID_ARGS ?= --jobs 1 --replace

objectives-grid: setup  ## RL and distillation grid: 12 cells x 3 seeds as queued dvc experiments (after make repro)
	$(BIN)/python -m flows.grid --grid objectives $(OBJECTIVES_GRID_ARGS)

# The SQL grid: Dual-Track / GRPO, no Propose, schema in the prompt, no warm-up x seeds (docs/sql.md).
SQL_GRID_ARGS ?= --jobs 1 --replace

sql-grid: setup  ## TRUST-SQL's comparisons: 6 cells x 3 seeds as queued dvc experiments (after make repro TRACK=sql)
	$(BIN)/python -m flows.grid --grid sql $(SQL_GRID_ARGS)

server: setup  ## a local Prefect server with its UI on http://127.0.0.1:4200
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

deploy: setup  ## serve the pipeline flow on its cron schedule against the local server
	PREFECT_API_URL=http://127.0.0.1:4200/api $(BIN)/python flows/pipeline.py serve

clean-outputs:  ## list the pipeline's outputs (what dvc.lock records; imported logs stay); CONFIRM=1 deletes them
	$(BIN)/python -m tools.clean_outputs $(if $(CONFIRM),--yes,)
