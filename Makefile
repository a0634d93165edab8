# One command per job. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run lb worker exporter test lint fmt psql stop migrate schema bench deps venv

# The Debian packages of the monitoring binaries: promtool (tests) and the PostgreSQL exporter.
EXPORTER_PKG := prometheus-postgres-exporter
MONITORING_PKGS := prometheus $(EXPORTER_PKG)

## run: local PostgreSQL (unless DATABASE_URL), migrate, seed demo data, serve on :8000 and run a job worker
##      (METRICS_EXPORTER=yes: and the PostgreSQL exporter on 127.0.0.1:9187, README "Monitoring")
run: deps venv
	@case "$$(printf %s "$$METRICS_EXPORTER" | tr A-Z a-z)" in yes|true|1|on) scripts/install-system-deps $(EXPORTER_PKG);; esac
	@$(PY) -m dbctl run

## lb: local PostgreSQL, migrate, seed, GATEWAY_INSTANCES single-worker gateways behind HAProxy on :8000
##     (README "Several gateways behind HAProxy"), and a job worker
lb: deps venv
	@scripts/install-system-deps haproxy
	@$(PY) -m dbctl lb

## worker: a job worker alone (mails, webhooks) on the database in use
worker: deps venv
	@$(PY) -m dbctl worker

## exporter: the PostgreSQL exporter alone (our queries, as booking_monitor) on the database in use
exporter: deps venv
	@scripts/install-system-deps $(EXPORTER_PKG)
	@$(PY) -m dbctl exporter

## test: the whole test suite against private PostgreSQL clusters (and headless Chromium, HAProxy, promtool, the exporter)
test: deps venv
	@scripts/install-system-deps chromium haproxy $(MONITORING_PKGS)
	$(PY) -m pytest

## lint: ruff (lint + format check) and mypy on the gateway
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy gateway dbctl bench worker

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## psql: psql on the database in use, as the owner/DBA role (works with piped input)
psql: deps venv
	@$(PY) -m dbctl psql

## migrate: apply migrations and reload functions on the database in use
migrate: deps venv
	@$(PY) -m dbctl migrate

## stop: stop the local PostgreSQL cluster (data is kept)
stop: venv
	@$(PY) -m dbctl stop

## schema: regenerate sql/schema.sql from a fresh build (commit the result)
schema: deps venv
	@$(PY) -m dbctl schema

## bench: pgbench scenarios and HTTP load (bounded, 127.0.0.1 only; HAProxy for the lb-compare part)
bench: venv
	@scripts/install-system-deps wrk haproxy
	$(PY) -m bench

deps:
	@scripts/install-system-deps

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)
