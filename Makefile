# gridflow — the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check format lock clean bench bench-intake bench-dispatch bench-sla faults contract

$(STAMP): requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	touch $(STAMP)

run: $(STAMP)  ## the whole platform on this machine (embedded PostgreSQL and broker unless configured)
	$(BIN)/python -m deploy.local_stack

test: $(STAMP)  ## the test suite (servers from DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, else embedded)
	$(BIN)/python -m pytest

check: $(STAMP)  ## lint, format check, types, import contracts, configuration, generated docs
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m libs.common.refdata.check --config config
	$(BIN)/python -m services.sla.policies check --config config
	$(BIN)/python -m services.hotline_bridge.mapping --config config
	$(BIN)/python -m services.citycare_bridge.mapping --config config
	$(BIN)/python -m services.citycare_bridge.interface
	$(BIN)/python -m libs.common.catalogue --check

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock:  ## refresh both lock files from pyproject.toml (needs uv: pip install uv)
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
		--no-header -o requirements.lock
	uv pip compile pyproject.toml --group dev --generate-hashes --python-version 3.11 \
		--no-header -o requirements-dev.lock

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache

bench: $(STAMP)  ## the whole stack end to end: cases/s and latency at fixed loads and saturation, each stage vs its ceiling (docs/performance.md)
	$(BIN)/python -m bench.e2e

faults: $(STAMP)  ## the fault suite under steady load: kill -9 of each service and bridge, broker paused, PostgreSQL restarted, poison, receiver down; deliveries and deadline signals checked (docs/reliability.md)
	$(BIN)/python -m bench.faults

contract: $(STAMP)  ## schemathesis against every service's OpenAPI document: no 5xx, answers as documented (docs/reliability.md)
	$(BIN)/python -m bench.contract

bench-intake: $(STAMP)  ## intake's accepted reports/s vs a trivial endpoint (docs/performance.md)
	$(BIN)/python -m bench.intake

bench-dispatch: $(STAMP)  ## dispatch's cases/s vs the raw broker, webhooks/s, routing p99 (docs/performance.md)
	$(BIN)/python -m bench.dispatch

bench-sla: $(STAMP)  ## sla's RSS with 10k/100k/1M open timers, timers fired/s and firing lag (docs/performance.md)
	$(BIN)/python -m bench.sla
