# Two commands do all set-up on a fresh clone: `make repro` (the reproduction) and `make test`.
# Both first create .venv with everything the project needs, if it is missing or out of date.
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch (on this machine's disk). A GPU user: `make TORCH_SPEC="torch==2.13.0" \
# TORCH_INDEX=https://download.pytorch.org/whl/cu126 install`, or install their CUDA torch into .venv first.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PLOTS_TEMPLATE := .dvc/plots/offline.html

.PHONY: install repro test lint benchmark bench-search ui
install: $(VENV)/.installed $(PLOTS_TEMPLATE)

# `dvc plots show`'s page template with Vega inline (.dvc/config: plots.html_template), git-ignored
$(PLOTS_TEMPLATE): $(VENV)/.installed
	$(BIN)/python -m study.plots_offline

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

# The tests marked `postgres` run against a throwaway PostgreSQL server that .ci/with-postgres starts;
# tests/test_plots_offline.py needs Chromium, which .ci/with-chromium installs if missing.
test: install
	.ci/with-chromium .ci/with-postgres $(BIN)/python -m pytest -o cache_dir=$(VENV)/.pytest_cache

lint: install
	$(BIN)/ruff check .

# The training step of every model, real-valued, binary and binary with diagnostics (about 20 minutes
# here); the table goes into the README's bench-step block. BNN_REFERENCE_REPOS=DIR adds AdamBNN's
# and ReCU's models. Then ResNet-18's step under torch.compile, a fresh process per binarizer (a
# compile reuses what an earlier one compiled in the process; about 12 minutes): bench-compile-*.
benchmark: install
	$(BIN)/python -m study.benchmark --readme README.md
	for b in ste recu; do $(BIN)/python -m study.benchmark --models resnet18 --binarizers $$b --compile --rounds 3 \
	  --out reports/benchmarks/compile-$$b.md --readme README.md || exit 1; done

# The search against a plain Optuna loop over the same training (about 30 minutes here); the
# summaries go into the README's bench-search block.
bench-search: install
	$(BIN)/python -m study.search.bench --trials 20 --workers 1 2 --out reports/benchmarks/search-20.md --readme README.md
	$(BIN)/python -m study.search.bench --trials 100 --workers 1 2 --out reports/benchmarks/search-100.md --readme README.md

ui: install
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --host 127.0.0.1 --port 5000
