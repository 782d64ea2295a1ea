# The front door. `make demo` runs the SimCLRv2 pipeline on the local SLURM cluster and the bundled
# real data (Fashion-MNIST); `make test` runs the whole test suite. Each does its own set-up.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY = "$$(tools/setup_env.sh)/bin/python"

.PHONY: help setup test test-fast demo cluster-up cluster-down cluster-status bench

help:
	@echo "make demo            SimCLRv2 end to end on the local SLURM cluster (Fashion-MNIST)"
	@echo "make test            the whole test suite (installs packages, starts the local cluster)"
	@echo "make setup           Python env (outside the checkout) + Debian packages"
	@echo "make cluster-up|cluster-down|cluster-status   the local SLURM cluster"
	@echo "make bench           all benchmarks -> benchmarks/results/*.json"

setup:
	@tools/setup_system.sh
	@tools/setup_env.sh >/dev/null

cluster-up: setup
	@slurm/cluster.sh up

cluster-down:
	@slurm/cluster.sh down

cluster-status:
	@slurm/cluster.sh status

test: cluster-up
	@source <(slurm/cluster.sh env) && $(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	@$(PY) -m pytest -m "not slow and not cluster" $(PYTEST_ARGS)

demo: cluster-up
	@source <(slurm/cluster.sh env) && $(PY) -m jobs.cli.demo $(ARGS)

bench: setup
	@$(PY) -m benchmarks.run_all $(ARGS)
