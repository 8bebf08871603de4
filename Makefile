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

.PHONY: help setup run test serve lint check clean

help:
	@echo "make run    set everything up and start the app on http://$(HOST):$(PORT)/ with demo data, on DATABASE_URL"
	@echo "            when set, else on an embedded PostgreSQL in var/postgres/ (started with it, stopped after it)"
	@echo "make test   set everything up and run the whole test suite, on DATABASE_URL when set, else on the"
	@echo "            embedded PostgreSQL (DATABASE_URL=sqlite:///var/x.sqlite3 for SQLite: PostgreSQL-only tests skip)"
	@echo "make serve  production: migrate, collectstatic, start gunicorn on $(HOST):$(PORT) (needs DATABASE_URL, SECRET_KEY, ALLOWED_HOSTS)"
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
	$(PY) manage.py demo_login --url http://$(CALLBACK_HOST):$(PORT)/admin/ && \
	ORCHESTRATOR_EXECUTOR=threadpool ORCHESTRATOR_EMBEDDED_SCHEDULER=true \
	ORCHESTRATOR_NODE_PROVISIONING=http ORCHESTRATOR_CALLBACK_BASE_URL=http://$(CALLBACK_HOST):$(PORT) \
	exec $(PY) manage.py runserver $(HOST):$(PORT)'

test: setup
	@$(WITH_DB) $(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure, not a pass" >&2; fi; \
	exit $$rc

# The production profile on this machine (README, "Deploy"): the same migrate and collectstatic a deployment
# runs, then gunicorn (orchestrator_site/gunicorn_conf.py). Its settings come from the environment only; the
# three it cannot do without are checked first, so a missing one is one clear message, not a traceback.
# Unless the environment says otherwise, processes run in the web process's thread pool and the scheduler
# runs embedded in it: a whole deployment on one machine, with no broker (ORCHESTRATOR_EXECUTOR=celery and
# ORCHESTRATOR_EMBEDDED_SCHEDULER=false for separate workers and scheduler).
SERVE_NEEDS := DATABASE_URL SECRET_KEY ALLOWED_HOSTS

serve:
	@missing=(); for name in $(SERVE_NEEDS); do [ -n "$${!name}" ] || missing+=("$$name"); done; \
	if [ $${#missing[@]} -gt 0 ]; then \
	  echo "make serve: $${missing[*]} not set; the production profile needs them from the environment:" >&2; \
	  for name in "$${missing[@]}"; do case $$name in \
	    DATABASE_URL) echo "  export DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/NAME   # the PostgreSQL database" >&2;; \
	    SECRET_KEY) echo "  export SECRET_KEY=\"\$$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')\"   # the same on every machine, kept secret" >&2;; \
	    ALLOWED_HOSTS) echo "  export ALLOWED_HOSTS=orch.example.org   # comma-separated host names this server answers to" >&2;; \
	  esac; done; \
	  echo "then run make serve again (README.md, \"Deploy\")." >&2; \
	  exit 2; \
	fi
	@$(MAKE) --no-print-directory setup
	DJANGO_ENV=production $(PY) manage.py migrate --no-input
	DJANGO_ENV=production $(PY) manage.py collectstatic --no-input -v0
	DJANGO_ENV=production \
	ORCHESTRATOR_EXECUTOR=$${ORCHESTRATOR_EXECUTOR:-threadpool} \
	ORCHESTRATOR_EMBEDDED_SCHEDULER=$${ORCHESTRATOR_EMBEDDED_SCHEDULER:-true} \
	GUNICORN_BIND=$${GUNICORN_BIND:-$(HOST):$(PORT)} \
	exec .venv/bin/gunicorn -c orchestrator_site/gunicorn_conf.py

lint: setup
	$(PY) -m ruff check .

check: setup
	$(PY) manage.py check --fail-level WARNING
	$(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf .venv $(TOOLS) var .pytest_cache .ruff_cache
