# Two commands matter: `make run` and `make test` (`make lint` before a commit). Both build .venv from the pinned requirements.
# `make clients` builds the desktop clients into clients/dist: the proxyclient wheel and the npm package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-usage install migrate manage clients clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py migrate --noinput

# Any manage.py command with the development defaults `make run` uses: make manage ARGS="list_devices"
manage: $(STAMP)
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py $(ARGS)

run: $(STAMP)
	@# Development defaults; export DJANGO_DEBUG=false (and real secrets) for production.
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py run_platform

# Two pytest-xdist workers, a file each at a time (a file's servers and fixtures stay in one worker); each
# worker has its own test database, Redis key prefix and var directory. PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# ruff (lint rules and formatting), mypy (strict on proxyproject/lib, tokens, usage, gateway) and the layer
# contracts. django-stubs' plugin imports the settings: with debug on they need no secrets (nor servers).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DJANGO_DEBUG=true $(VENV)/bin/mypy
	PYTHONPATH=clients/python $(VENV)/bin/lint-imports --no-cache

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

# Years of usage in a PostgreSQL database of its own (bench_usage, dropped after): make bench-usage BENCH_USAGE_ARGS="--records 1000000"
bench-usage: $(STAMP)
	$(PY) -m bench.usage $(BENCH_USAGE_ARGS)

clients: $(STAMP)
	rm -rf clients/dist
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir clients/dist ./clients/python
	cd clients/typescript && npm ci --no-audit --no-fund && npm run build && npm pack --pack-destination ../dist

clean:
	rm -rf $(VENV) .pytest_cache clients/dist clients/python/build
