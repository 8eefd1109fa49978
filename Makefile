# One venv, pinned torch pair (constraints.txt), editable install with the dev and nnunet extras.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench gpu-check postgres slurm clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,nnunet]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## train every architecture on the synthetic replica, write results/demo/leaderboard.md
	$(BIN)/lesionbench run --suite demo

test: $(STAMP)  ## the full test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## the fast tier: no training, no processes (under 2 minutes on 2 cores)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)  ## ruff, as CI runs it
	$(BIN)/ruff check lesionbench tests

bench: $(STAMP)  ## throughput / loader / latency benchmark, writes results/perf.md
	$(BIN)/lesionbench bench

# One ISIC 2018 Task 1 epoch (2594 training images) of full-size synthetic images at the network input
# 768x1024 (767x1022, the common ISIC 2018 size, rounded up to the encoders' multiple of 32), batch 4,
# mixed precision, with the CUDA allocator's peak; then the inference section. Under 8 minutes on one GPU.
gpu-check: $(STAMP)  ## one-command GPU check: writes results/gpu-check/perf.md
	$(BIN)/lesionbench bench --device cuda --only epoch --only inference --epoch-size 768x1024 --epoch-batch 4 \
		--out results/gpu-check

postgres:  ## PostgreSQL server binaries for the shared-storage Optuna test (Debian)
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then echo "postgresql present"; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; fi

slurm:  ## SLURM + munge binaries for the scale-out tests (Debian); the tests start a private one-node cluster
	@if [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/munged ] && command -v sbatch >/dev/null; then echo "slurm present"; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; fi

clean:
	rm -rf $(VENV) .pytest_cache
