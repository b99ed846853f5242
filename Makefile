# Two commands matter: `make run` and `make test` (`make lint` before a commit). Both build .venv from the pinned requirements.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench install migrate clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput

run: $(STAMP)
	@# Development defaults; export DJANGO_DEBUG=false (and real secrets) for production.
	DJANGO_DEBUG=$${DJANGO_DEBUG:-true} $(PY) manage.py run_platform

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (lint rules and formatting), mypy (strict on proxyproject/lib) and the layer contracts.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
