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

# Two phases. The unit tests (no Ray) spread over the cores with pytest-xdist. The Ray tests then run in one
# process: they share one local Ray cluster, one Serve and the trained fixtures, which a second worker would build
# again. Both phases always run; the target fails if either did (pytest's 5, "nothing selected", only if both did).
# Select with TEST_MARK (a marker expression, e.g. "not slow"): a `-m` in PYTEST_ARGS would replace the phases' own.
UNIT_WORKERS ?= auto
TEST_MARK ?=
AND_MARK := $(if $(TEST_MARK), and ($(TEST_MARK)))
test: $(STAMP)
	@unit=0; ray=0; \
	WANDB_SILENT=true $(BIN)/python -m pytest -m "not ray$(AND_MARK)" -n $(UNIT_WORKERS) $(PYTEST_ARGS) || unit=$$?; \
	WANDB_SILENT=true $(BIN)/python -m pytest -m "ray$(AND_MARK)" $(PYTEST_ARGS) || ray=$$?; \
	for code in $$unit $$ray; do [ $$code -eq 0 ] || [ $$code -eq 5 ] || exit $$code; done; \
	[ $$unit -ne 5 ] || [ $$ray -ne 5 ] || exit 5

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache .ruff_cache
