# sloguard: `make generate` (the main job) and `make test`. System packages: scripts/setup-system.sh.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
ARGS ?=

.PHONY: all venv generate generate-test-rules check-generated lint test bench bench-exporter bench-diagnose diagnose check-migrations simulate exporter clean

all: generate

# The virtual environment is rebuilt when requirements.txt (the fully pinned set) changes.
$(STAMP): requirements.txt
	@# a venv left half-made (no pip, e.g. python3-venv was missing) is rebuilt, not reused
	@test -x $(VENV)/bin/pip || { rm -rf $(VENV) && python3 -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@# console scripts sloguard-pg-exporter and sloguard-diagnose (editable: the checkout is the code)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

generate: $(STAMP)  ## slo.yaml -> alerts/, dashboards/, mixin
	$(PY) generate.py --spec slo.yaml --out .

generate-test-rules: $(STAMP)  ## tests/specs/*.yaml -> tests/promtool/rules/ (promtool tests' own rules)
	$(PY) -m tests.specs.render_rules

check-generated: $(STAMP)  ## fail when committed output is stale
	$(PY) generate.py --spec slo.yaml --out . --check

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) check-generated lint  ## everything CI runs
	$(PY) -m pytest $(ARGS)

bench: $(STAMP)  ## generator scaling: 10, 100, 1000 SLOs; samples each SLO evaluation reads (Prometheus 2.42)
	$(PY) -m bench.generate_bench
	$(PY) -m bench.eval_cost_bench

bench-exporter: $(STAMP)  ## our exporter vs Debian's prometheus-postgres-exporter
	$(PY) -m bench.exporter_bench $(ARGS)

bench-diagnose: $(STAMP)  ## diagnose on the scenario's 2.5M users
	$(PY) -m bench.diagnose_bench $(ARGS)

diagnose: $(STAMP)  ## DSN from PG_DSN / --dsn; see README
	$(PY) -m sloguard.diagnose $(ARGS)

check-migrations: $(STAMP)  ## squawk lint + query-plan gate on a throwaway PostgreSQL
	$(PY) -m sloguard.migration_gate $(ARGS)

simulate: $(STAMP)  ## replay the 2024-01-15 incident end to end on 127.0.0.1
	$(PY) -m sloguard.simulate $(ARGS)

exporter: $(STAMP)
	$(PY) -m exporters.pg_exporter $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
