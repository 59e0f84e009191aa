# Two commands do everything on a fresh machine: `make quickstart` and `make test`.
# Both create .venv if missing and install torch first (CPU wheel by default), then the project.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.rlhf-ray-installed
PYTEST_ARGS ?= --durations=30

.PHONY: install quickstart byo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# The console shows stages, progress and summaries; Ray's and the libraries' logs go to runs/quickstart/logs/.
# `make quickstart QUICKSTART_ARGS=--verbose` shows them on the console instead.
QUICKSTART_ARGS ?=
quickstart: $(STAMP)
	WANDB_SILENT=true $(BIN)/rlhf-ray loop --config configs/quickstart.yaml $(QUICKSTART_ARGS)

# Bring your own model and data, on the example in examples/byo/: a stand-in checkpoint (tiny Qwen2, ChatML, no pad
# token) built offline, then the loop on configs/byo.yaml. Point source.base_model at your checkpoint instead.
BYO_ARGS ?=
byo: $(STAMP)
	test -d runs/byo-base || WANDB_SILENT=true $(BIN)/rlhf-ray init-model --arch qwen2 --chat-format chatml \
		--no-pad-token --corpus examples/byo/sft.jsonl --out runs/byo-base > /dev/null
	WANDB_SILENT=true PYTHONPATH=. $(BIN)/rlhf-ray loop --config configs/byo.yaml $(BYO_ARGS)

test: $(STAMP)
	WANDB_SILENT=true $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
