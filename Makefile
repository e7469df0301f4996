# Two commands for a fresh machine (see README.md):
#   make benchmark   install into .venv, then run the default benchmark (PatchCore, synthetic data)
#   make test        install into .venv, then lint and run the test suite
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fsad-installed
# torch/torchvision are pinned to the releases this project is tested with (CPU here);
# pip takes them from the local wheel cache where one exists.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install benchmark benchmark-all test lint format bench-perf

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q $(TORCH)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev,elpv,lite12,ray,anomalib]'
	touch $(STAMP)

benchmark: $(STAMP)
	$(BIN)/fsad-bench run --out runs/default

# every built-in method side by side (meta-trained ones take much longer on a CPU)
benchmark-all: $(STAMP)
	$(BIN)/fsad-bench run --method all --out runs/all

test: $(STAMP)
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; } \
	  || echo "could not install chromium: the leaderboard browser test will say how to"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# one torch thread per process: the suite runs processes side by side, and two threads
	# fighting over 2 cores are many times slower (README, Everyday use)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# every figure of docs/performance.md, one thread (anomalib is installed by `make install`)
BENCH_SCRIPTS := bench_vs_anomalib.py bench_coreset.py bench_patchcore.py bench_aupro.py bench_pr_metrics.py \
	bench_padim.py bench_meta_steps.py "bench_runs.py cache" "bench_runs.py memory" \
	bench_bridge_vs_engine.py
bench-perf: $(STAMP)
	@status=0; for script in $(BENCH_SCRIPTS); do \
	  echo "== python benchmarks/$$script"; \
	  OMP_NUM_THREADS=1 $(BIN)/python benchmarks/$$script || status=1; \
	done; exit $$status
