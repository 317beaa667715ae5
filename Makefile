# liveimg: two commands from a fresh Debian 12 machine, as root: `make demo` and `make test`.
# Both install what they need first (Debian packages from debian-packages.txt, then the venv).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
STAMP := $(VENV)/.installed

.PHONY: all setup host venv lint types unit integration e2e test demo bench clean

all: test

setup: host venv

host:
	@scripts/setup-host

# libguestfs's Python bindings exist only for Debian's /usr/bin/python3: the venv must see them.
$(STAMP): pyproject.toml | host
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(PY) -c 'import guestfs, liveimg'
	touch $@

venv: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check liveimg tests benchmarks scripts
	$(VENV)/bin/ruff format --check liveimg tests benchmarks scripts

types: setup
	$(VENV)/bin/mypy

unit: setup
	$(PYTEST) -m unit -n 2

# The slow tiers run two test files at a time: QEMU under TCG uses one core per guest.
integration: setup
	$(PYTEST) -m integration -n 2 --dist loadfile --durations=15

# xdist would hand out the files with the most tests first; tests/conftest.py orders them longest first.
e2e: setup
	$(PYTEST) -m e2e -n 2 --dist loadfile --no-loadscope-reorder --durations=40

test: lint types unit integration e2e

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
