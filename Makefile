# Local stack without Docker. `make help` lists the targets.
SHELL := /bin/bash
ENV := source scripts/env.sh &&
PY := .venv/bin/python

.PHONY: help setup run stop test replay docs bench bench-api bench-checkpoint bench-load bench-backfill lint format neo4j-start neo4j-stop neo4j-status bench bench-sync

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## install everything: venv (pinned), the project, Neo4j 5.26 from Maven Central
	@bash scripts/setup.sh

run: setup ## the main job: Neo4j + airflow standalone + TK API (offline replay if unreachable) + trigger tk_ingest + summary
	@bash scripts/neo4j.sh start
	@$(ENV) $(PY) scripts/local_stack.py run $(RUN_ARGS)

stop: ## stop everything `make run` started (Airflow, offline TK API, Neo4j)
	@$(ENV) $(PY) scripts/local_stack.py stop
	@bash scripts/neo4j.sh stop

test: setup ## run the test suite (starts Neo4j when it is not running)
	@$(ENV) .venv/bin/pytest $(PYTEST_ARGS)

lint: setup ## ruff check + format check
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

docs: setup ## regenerate the tables of docs/graph-model.md from the entity table
	@$(PY) -m include.loaders.graph_model

format: setup ## apply ruff fixes and formatting
	@.venv/bin/ruff check --fix . && .venv/bin/ruff format .

neo4j-start: setup ## start the local Neo4j (Bolt on 127.0.0.1, port NEO4J_BOLT_PORT, default 7687)
	@bash scripts/neo4j.sh start

neo4j-stop: ## stop the local Neo4j
	@bash scripts/neo4j.sh stop

neo4j-status: ## is the local Neo4j running?
	@bash scripts/neo4j.sh status

replay: setup ## offline TK API on PORT (default 8123): real samples, or GENERATE=5000 SEED=1 for synthetic data
	@.venv/bin/python -m include.tk_replay --port $(or $(PORT),8123) $(if $(GENERATE),--generate $(GENERATE) --seed $(or $(SEED),1))

bench-api: setup ## TK client + offline server throughput (pages/s, entities/s, CPU per 1,000 entities)
	@.venv/bin/python bench/bench_api.py

bench-checkpoint: setup ## checkpoint engine: bytes written vs rewrite-everything, save cost, reopen time, size
	@.venv/bin/python bench/bench_checkpoint.py

bench-load: setup ## loaders: end-to-end vs raw Neo4j ceiling, vs one tx per item, checkpoints on/off, memory
	@bash scripts/neo4j.sh start
	@$(ENV) .venv/bin/python bench/bench_load.py

bench-backfill: setup ## parallel backfill in airflow standalone: 4 windows vs 1 with page latency
	@bash scripts/neo4j.sh start
	@$(ENV) .venv/bin/python bench/bench_backfill.py

bench-sync: setup ## SyncFeed mirror, 35 types at 1/20: vs raw Neo4j ceiling, vs API bound at 4 in flight, growth, memory
	@bash scripts/neo4j.sh start
	@$(ENV) .venv/bin/python bench/bench_sync.py $(BENCH_SYNC_ARGS)

bench: bench-api bench-checkpoint bench-load bench-backfill bench-sync ## every benchmark (prints ratios)

adversarial-checkpoint: setup ## checkpoint side attacked: bad CLI input, damaged files, ENOSPC, SIGKILL, rival writers
	@.venv/bin/python bench/adversarial_checkpoint.py

.PHONY: adversarial adversarial-checkpoint
adversarial: adversarial-checkpoint adversarial-loader ## every adversarial pass: inputs tried, faults injected, items lost, unclear errors

.PHONY: adversarial-loader
adversarial-loader: setup ## load side attacked: bad confs, credentials in the URL, API faults, a Neo4j outage, SIGKILLs
	@bash scripts/neo4j.sh start
	@$(ENV) $(PY) bench/adversarial_loader.py
