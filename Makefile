# The README's two commands: `make run` (set up and start the app) and `make test` (set up and run
# every test). Both work from a fresh clone: they install a pinned uv, then the locked dependencies.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
PY := .venv/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# Test processes (pytest-xdist), each with a test database of its own: the suite uses both cores of a 2-core
# machine. A test file runs whole in one process (--dist loadfile): the tests of one file may share something
# outside their database (the Celery tests' Redis database). TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

.PHONY: help setup run test lint check clean

help:
	@echo "make run    set everything up and start the app on http://$(HOST):$(PORT)/ with demo data, on DATABASE_URL"
	@echo "            when set, else on an embedded PostgreSQL in var/postgres/ (started with it, stopped after it)"
	@echo "make test   set everything up and run the whole test suite, on DATABASE_URL when set, else on the"
	@echo "            embedded PostgreSQL (DATABASE_URL=sqlite:///var/x.sqlite3 for SQLite: PostgreSQL-only tests skip)"
	@echo "make lint   ruff check"
	@echo "make check  Django's system checks and the migrations check"

$(UV):
	@echo "==> installing uv $(UV_VERSION) into $(TOOLS)/"
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The environment follows the lock file exactly (--locked refuses a lock that is out of date).
setup: $(UV)
	@echo "==> installing the locked dependencies into .venv/"
	UV_PYTHON_PREFERENCE=system $(UV) sync --locked --quiet

# Runs the command after it on DATABASE_URL when that is set; otherwise on the embedded PostgreSQL in
# var/postgres/ (the `embedded` dependency group): started, or joined when already running, for the command,
# with DATABASE_URL set for it and its children (test workers, the Celery workers tests start), and stopped
# when the command ends and no other command uses it (orchestrator_site/embedded_db.py).
WITH_DB := $(PY) -m orchestrator_site.embedded_db run --

# The demo's stand-in provisioning system (workflows/node/provisioning.py) answers create_node's callback
# step from a thread of the server, on the address the server listens on (127.0.0.1 when that is 0.0.0.0,
# which is no address to call and no allowed host).
CALLBACK_HOST = $(if $(filter 0.0.0.0,$(HOST)),127.0.0.1,$(HOST))

# One shell under one server: migrate, the demo, the login, then the web server in the shell's place (exec),
# so a Ctrl-C or a `kill` of the runner reaches it directly.
run: setup
	$(WITH_DB) sh -c '\
	$(PY) manage.py migrate --no-input && \
	$(PY) manage.py load_demo && \
	$(PY) manage.py demo_login && \
	ORCHESTRATOR_EXECUTOR=threadpool ORCHESTRATOR_EMBEDDED_SCHEDULER=true \
	ORCHESTRATOR_NODE_PROVISIONING=http ORCHESTRATOR_CALLBACK_BASE_URL=http://$(CALLBACK_HOST):$(PORT) \
	exec $(PY) manage.py runserver $(HOST):$(PORT)'

test: setup
	@$(WITH_DB) $(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure, not a pass" >&2; fi; \
	exit $$rc

lint: setup
	$(PY) -m ruff check .

check: setup
	$(PY) manage.py check --fail-level WARNING
	$(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf .venv $(TOOLS) var .pytest_cache .ruff_cache
