# Two commands do all set-up on a fresh machine: `make reports` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
PLAN   ?= reports/plans/quick.yaml
# e.g. make reports RUN_ARGS="--jobs 2" or RUN_ARGS="--scheduler tcp://host:8786 --set epochs=1"
RUN_ARGS ?=

# OpenMP threads that spin while they wait stall each other on a busy 2-core machine (measured:
# training a small MLP took 18–35 s instead of 1.4 s under load); passive waiting costs little when idle.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install reports test lint bench lab clean

install: $(STAMP)

# Idempotent: reinstalls only when pyproject.toml or environment.yml changed.
# torch/torchvision are pinned to the tested versions first (see environment.yml).
$(STAMP): pyproject.toml environment.yml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

reports: $(STAMP)
	$(PY) -m landscape run $(PLAN) $(RUN_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check lib tests benchmarks

# The last line printed is pytest's summary.
test: $(STAMP)
	$(PY) -m ruff check lib tests benchmarks
	$(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m benchmarks

lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,lab]"
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf $(VENV) reports/quick reports/paper reports/interactive .cache
