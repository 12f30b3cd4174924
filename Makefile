# Polyphony: the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000
# Tests run against real PostgreSQL and Redis on this machine (CI starts them in .ci/run).
TEST_DATABASE_URL ?= postgres://127.0.0.1:5432/test

.PHONY: demo test install lint

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: this CPU build lies on the machine's disk; unpinned pulls a CUDA build of GBs.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Embedded defaults: SQLite, Celery on kombu's filesystem broker. Ctrl-C stops both processes.
demo: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_seed
	@echo ""
	@echo "  Researcher pages:  http://$(HOST):$(PORT)/studies/   (log in as demo / polyphony-demo)"
	@echo "  Annotator link:    http://$(HOST):$(PORT)/s/demo-helpfulness/?PROLIFIC_PID=demo-participant-1"
	@echo "  API docs:          http://$(HOST):$(PORT)/api/docs/"
	@echo "  Django admin:      http://$(HOST):$(PORT)/admin/"
	@echo ""
	$(BIN)/celery -A config worker -Q default,training --pool=solo --loglevel=warning & \
	  worker=$$!; trap "kill $$worker 2>/dev/null" EXIT INT TERM; \
	  $(BIN)/python manage.py runserver $(HOST):$(PORT)

test: $(STAMP)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "chromium missing: browser tests will fail"
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest -p no:cacheprovider
	# The embedded default: the database-level suite again on SQLite (browser and worker tests run once, above).
	env -u DATABASE_URL $(BIN)/pytest -p no:cacheprovider -m "not browser and not slow" -q
