# microservice-operator developer entry points. Everything a fresh machine needs
# (virtualenv, Python packages, Go-built control plane) is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCALCLUSTER := $(BIN)/python tools/localcluster/localcluster.py
KUBECONFIG_LOCAL := $(CURDIR)/.localcluster/kubeconfig

.PHONY: help venv tools lint typecheck unit integration faults test cluster-up cluster-down cluster-env \
	crds run bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/microservice-operator: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/microservice-operator ## Create .venv with the operator and dev tools

tools: ## Install prometheus/promtool (Debian package) for the metrics and alert tests
	tools/prometheus.sh

lint: venv ## ruff
	$(BIN)/ruff check operator tests tools bench
	$(BIN)/ruff format --check operator tests tools bench

typecheck: venv ## mypy --strict on the package
	$(BIN)/mypy operator/microservice_operator

crds: venv ## Regenerate crds/ from the pydantic models
	$(BIN)/python -m microservice_operator.crd
	cp crds/microservices.mso.dev.yaml manifests/base/crds/microservices.mso.dev.yaml

unit: venv tools ## Unit tests (pure logic, no cluster)
	$(BIN)/pytest tests/unit

integration: venv tools ## Integration tests against the local control plane (or $$KUBECONFIG)
	$(BIN)/pytest tests/integration

faults: venv tools ## Fault-injection suite (kills, control-plane restarts, network faults)
	$(BIN)/pytest tests/faults

test: lint typecheck tools ## Lint, type check, unit, integration and fault-injection tests
	$(BIN)/pytest tests/unit tests/integration tests/faults

cluster-up: venv ## Build (once) and start the local control plane
	$(LOCALCLUSTER) up

cluster-down: venv ## Stop the local control plane
	$(LOCALCLUSTER) down

cluster-env: venv ## Print the KUBECONFIG export for the local control plane
	@$(LOCALCLUSTER) env

run: cluster-up ## Start the local control plane, install the CRD, run the operator in the foreground
	KUBECONFIG=$(KUBECONFIG_LOCAL) $(BIN)/kubectl apply --server-side --force-conflicts -f crds/
	KUBECONFIG=$(KUBECONFIG_LOCAL) $(BIN)/microservice-operator

bench: venv cluster-up ## Run the benchmarks (results in bench/README.md)
	KUBECONFIG=$(KUBECONFIG_LOCAL) $(BIN)/python -m bench.converge

clean: cluster-down ## Stop the cluster and remove local state (the binary cache stays)
	rm -rf .localcluster .mypy_cache .ruff_cache .pytest_cache
