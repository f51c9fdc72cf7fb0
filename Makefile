# Two commands matter on a fresh machine: `make demo` and `make test` (README); `make help` lists the rest.
# Everything installs into .venv at the repo root; the SAM CLI and checkov go into .venv-tools
# (Makefile.infra) because their pins conflict with the runtime's.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: help install demo test unit chaos lint typecheck bench bench-long clean

help:  ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(INSTALLED)  ## .venv with the runtime and dev dependencies (pinned by constraints.txt)

demo: install  ## start the local stack, replay events/segment, print the LaunchDarkly segments
	$(BIN)/ld-audiences demo

# sam-build first: tests/integration/test_sam_build.py checks what it built (and fails without it here).
test: install lint typecheck validate checkov sam-build  ## the whole suite, as CI runs it
	LD_AUDIENCES_REQUIRE_SAM_BUILD=1 $(BIN)/python -m pytest -n 2 --dist loadgroup

unit: install  ## the fast tests only
	$(BIN)/python -m pytest tests/unit

chaos: install  ## 5,000+ events through the local stack under injected LaunchDarkly faults (~2 min)
	$(BIN)/python -m pytest -m chaos -s tests/e2e/test_chaos.py

lint: install  ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install  ## mypy --strict on the shared package and both functions
	$(BIN)/mypy

bench: install  ## benchmarks (~30 min on 2 cores); rewrites BENCHMARKS.md (not part of `make test`)
	$(BIN)/python -m bench

bench-long: install  ## the long simulated scenarios (1M first sync, 10,000 audiences, 10 min steady); their block of BENCHMARKS.md
	$(BIN)/python -m bench --long

clean:  ## remove .venv, .venv-tools, .aws-sam and the caches
	rm -rf $(VENV) .venv-tools .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis

include Makefile.infra
