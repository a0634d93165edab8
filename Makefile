# One command per job. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run lb cluster cluster-stop failover-drill worker exporter test lint fmt psql stop migrate schema bench deps venv

# The Debian packages of the monitoring binaries: promtool (tests) and the PostgreSQL exporter.
EXPORTER_PKG := prometheus-postgres-exporter
MONITORING_PKGS := prometheus $(EXPORTER_PKG)
# pg_auto_failover: the monitor's extension and pg_autoctl (make cluster, the failover test and drill).
AUTOFAILOVER_PKGS := postgresql-15-auto-failover pg-auto-failover-cli

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

## cluster: in the background, pg_auto_failover (monitor, primary, standby: synchronous), HAProxy over
##          GATEWAY_INSTANCES gateways and a worker, all on 127.0.0.1 (README "Single-machine cluster")
cluster: deps venv
	@scripts/install-system-deps haproxy $(AUTOFAILOVER_PKGS)
	@$(PY) -m dbctl cluster

## cluster-stop: stop everything `make cluster` started (the data is kept)
cluster-stop: venv
	@$(PY) -m dbctl cluster-stop

## failover-drill: purchase load through HAProxy on a throwaway cluster; kill -9 the primary's postmaster,
##                 then its whole node, then a gateway; times and failures into bench/RESULTS.md
failover-drill: deps venv
	@scripts/install-system-deps haproxy $(AUTOFAILOVER_PKGS)
	$(PY) -m bench.failover

## worker: a job worker alone (mails, webhooks) on the database in use
worker: deps venv
	@$(PY) -m dbctl worker

## exporter: the PostgreSQL exporter alone (our queries, as booking_monitor) on the database in use
exporter: deps venv
	@scripts/install-system-deps $(EXPORTER_PKG)
	@$(PY) -m dbctl exporter

## test: the whole test suite against private PostgreSQL clusters (and headless Chromium, HAProxy, promtool, the exporter,
##       pg_auto_failover)
test: deps venv
	@scripts/install-system-deps chromium haproxy $(MONITORING_PKGS) $(AUTOFAILOVER_PKGS)
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
	@scripts/install-system-deps wrk haproxy gcc libc6-dev
	$(PY) -m bench

deps:
	@scripts/install-system-deps

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)
