# islurm — the Makefile is the CI contract: `make test` and `make lint`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where `make install` puts islurm: generations under $(PREFIX)/share/islurm, commands in $(PREFIX)/bin.
PREFIX ?= $(HOME)/.local
# The product as the unprivileged test user runs it (built from Debian's python3: root's
# Python may live in a 0700 home).
E2E_PREFIX ?= /opt/islurm-test
E2E_PYTHON ?= /usr/bin/python3
PACKAGES := daemon proxyshim sessionhooks config

.PHONY: help venv dev-tree install uninstall lint format test unit e2e cluster-up cluster-down \
        e2e-install demo bench clean

help:
	@echo "make demo         bring up a local Slurm test cluster and ssh into a job through islurm"
	@echo "make test         unit tests + real-Slurm/real-ssh tests (root, Debian; installs what it needs)"
	@echo "make lint         ruff + mypy --strict (product and tests)"
	@echo "make install      install islurm for this user (PREFIX=$(PREFIX))"
	@echo "make cluster-up / cluster-down   the local Slurm test cluster"
	@echo "make bench        benchmarks on the test cluster"

dev-tree:
	@mkdir -p .dev/islurm
	@for p in $(PACKAGES); do ln -sfn ../../$$p .dev/islurm/$$p; done

$(VENV)/.installed: pyproject.toml | dev-tree
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

# A new generation each time (<root>/generations/<version>-<time>/venv, built in place: venvs
# cannot move), its self-test, then `current` switched by rename; the install record
# (<root>/install.json) makes it an install `islurmctl update` may update. Layout:
# config/installs.py.
ISLURM_ROOT = $(PREFIX)/share/islurm
install:
	@set -euo pipefail; \
	version=$$($(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])'); \
	gen="$(ISLURM_ROOT)/generations/$$version-$$(date -u +%Y%m%dT%H%M%SZ)"; \
	python=$$($(PYTHON) -c 'import os, sys; print(os.path.realpath(sys.executable))'); \
	mkdir -p "$(ISLURM_ROOT)/generations"; \
	echo "building $$gen"; \
	"$$python" -m venv "$$gen/venv"; \
	"$$gen/venv/bin/python" -m pip install -q --upgrade pip; \
	"$$gen/venv/bin/python" -m pip install -q "$(CURDIR)"; \
	"$$gen/venv/bin/islurmctl" update --adopt "$$gen" --kind make --prefix "$(PREFIX)" --python "$$python" \
	  || { rm -rf "$$gen"; exit 1; }
	@echo "installed islurm into $(PREFIX) (commands in $(PREFIX)/bin)"

uninstall:
	rm -f "$(PREFIX)/bin/islurmd" "$(PREFIX)/bin/islurm-proxy" "$(PREFIX)/bin/islurmctl"
	rm -rf "$(PREFIX)/share/islurm"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p islurm -p tests

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

cluster-up:
	bash cluster/testcluster.sh up

cluster-down:
	bash cluster/testcluster.sh down

e2e-install:
	$(MAKE) --no-print-directory install PREFIX=$(E2E_PREFIX) PYTHON=$(E2E_PYTHON)

unit: venv
	$(PY) -m pytest tests/unit -q

# The real tier brings up the cluster and installs the product itself (tests/e2e/conftest.py);
# it fails, never skips, when that is impossible.
test: venv
	$(PY) -m pytest -q

e2e: venv
	$(PY) -m pytest tests/e2e -q

demo: venv
	bash cluster/demo.sh

bench: venv
	$(PY) -m bench

clean:
	rm -rf $(VENV) .dev .mypy_cache .ruff_cache .pytest_cache dist build
