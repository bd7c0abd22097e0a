# The two commands of README.rst: `make demo` and `make test`. Everything
# runs from the project's own virtual environment (.venv, made by
# tools/setup with Debian's python3); nothing is installed into the system's
# Python.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo demo-stop test lint unit integration bench

setup:
	VENV=$(VENV) ./tools/setup

demo: setup
	$(PY) -m ryu_dsr.demo

demo-stop:
	$(PY) -m ryu_dsr.demo --stop

test: setup lint
	$(PY) -m pytest -p no:cacheprovider tests

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

unit:
	$(PY) -m pytest tests/unit

integration:
	$(PY) -m pytest tests/integration

bench: setup
	$(PY) bench/hash_table.py
	$(PY) bench/failover.py
	$(PY) bench/cps.py
	$(PY) bench/handover.py
	$(PY) bench/dataplane.py
	$(PY) bench/fabric.py
	$(PY) bench/scale.py
	$(PY) bench/rest_load.py
	$(PY) bench/cluster.py
