# microservice-operator developer entry points. Everything a fresh machine needs
# (virtualenv, Python packages, Go-built control plane) is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCALCLUSTER := $(BIN)/python tools/localcluster/localcluster.py
KUBECONFIG_LOCAL := $(CURDIR)/.localcluster/kubeconfig

.PHONY: help venv lock image tools lint typecheck unit integration faults test cluster-up cluster-down cluster-env \
	crds run bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Hashed lock files, made by `make lock` (uv pip compile --universal: one lock for
# every Python >= LOCK_PYTHON and every platform, environment markers where the
# dependency set differs; so 3.11 here, 3.12 in the image). Three views of one
# resolution (the dev lock is resolved first, the others constrained to its pins):
#   requirements-dev.lock    runtime + dev extra + build backend + pip: the venv
#   requirements.lock        runtime dependencies only: the image's wheels
#   requirements-build.lock  build backend + pip: the image's builder stage
# pip installs them with --require-hashes; the project itself with --no-deps.
# `make lock LOCK_ARGS=--upgrade` (or --upgrade-package NAME) moves pins forward.
LOCK_PYTHON := 3.11
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version $(LOCK_PYTHON) \
	--generate-hashes --custom-compile-command 'make lock' $(LOCK_ARGS)
BUILD_REQUIRES = $(BIN)/python -c "import tomllib; \
	print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'], 'pip', sep='\n')"

$(BIN)/microservice-operator: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(BIN)/microservice-operator ## Create .venv with the operator and dev tools (from requirements-dev.lock)

lock: venv ## Regenerate the hashed lock files from pyproject.toml (uv pip compile)
	$(BUILD_REQUIRES) | $(UV_COMPILE) pyproject.toml - --extra dev -o requirements-dev.lock
	$(UV_COMPILE) pyproject.toml -c requirements-dev.lock -o requirements.lock
	$(BUILD_REQUIRES) | $(UV_COMPILE) - -c requirements-dev.lock -o requirements-build.lock
	@$(MAKE) --no-print-directory venv

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
	cp crds/microservices.mso.dev.yaml charts/microservice-operator/files/microservices.mso.dev.yaml

image: ## Build the operator image with podman, no Docker engine needed (tools/image.sh)
	tools/image.sh

# Tests run in TEST_WORKERS processes against one control plane (pytest-xdist; each
# process's operators watch only its own namespaces, see tests/integration/fixtures.py).
# Modules that must stay in one process say so with an xdist_group mark. Tests marked
# `serial` change the control plane for everyone (restart it, replace the CRD): by
# default (SERIAL=alongside) they run at the same time on a second, private control
# plane (SERIAL_CLUSTER: its own state directory and ports); SERIAL=after runs them
# afterwards on the shared one, alone (slower; what a KUBECONFIG cluster always gets).
# MSO_TEST_ORDER=longest-first starts the slowest tests first, by the last run's
# timings in pytest's cache (tests/conftest.py; a fresh clone has none: collection
# order). Figures in bench/README.md ("make test").
TEST_WORKERS ?= 6
SERIAL ?= alongside
export MSO_TEST_ORDER ?= longest-first
PYTEST_PARALLEL = $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup
SERIAL_CLUSTER = MSO_LOCALCLUSTER_DIR=$(CURDIR)/.localcluster-serial MSO_ETCD_PORT=17379 \
	MSO_ETCD_PEER_PORT=17380 MSO_APISERVER_PORT=17443 MSO_CONTROLLER_MANAGER_PORT=17257 \
	MSO_SCHEDULER_PORT=17259 MSO_KWOK_PORT=17250 MSO_METRICS_SERVER_PORT=17451
SERIAL_LOG = .localcluster-serial.log

unit: venv tools ## Unit tests (pure logic, no cluster)
	$(BIN)/pytest tests/unit

integration: venv tools ## Integration tests against the local control plane (or $$KUBECONFIG)
	$(PYTEST_PARALLEL) -m "not serial" tests/integration
	$(BIN)/pytest -m serial tests/integration

faults: venv tools ## Fault-injection suite (kills, control-plane restarts, network faults)
	$(PYTEST_PARALLEL) -m "not serial" tests/faults
	$(BIN)/pytest -m serial tests/faults

# The shared control plane: started by the parallel run if it is not up, stopped at
# the end unless it was up before (or MSO_KEEP_CLUSTER=1). With SERIAL=alongside the
# serial tests' private one is started and stopped by their own session (not with
# KUBECONFIG set: against a cluster of your own they always run afterwards).
test: lint typecheck tools ## Lint, type check, unit, integration and fault-injection tests
	@up=0; [ -n "$$KUBECONFIG" ] || ! $(LOCALCLUSTER) status >/dev/null 2>&1 || up=1; rc=0; \
	serial=""; \
	if [ -z "$$KUBECONFIG" ] && [ "$(SERIAL)" = alongside ]; then \
		$(LOCALCLUSTER) build || exit 1; \
		( $(SERIAL_CLUSTER) $(BIN)/pytest -m serial tests/integration tests/faults \
			--basetemp=$(CURDIR)/.localcluster-serial/pytest > $(SERIAL_LOG) 2>&1 ) & \
		serial=$$!; fi; \
	MSO_KEEP_CLUSTER=1 $(PYTEST_PARALLEL) -m "not serial" tests/faults tests/integration tests/unit \
		|| rc=$$?; \
	if [ -n "$$serial" ]; then \
		wait $$serial || { [ $$rc -ne 0 ] || rc=1; }; \
		echo "--- tests marked serial, on a private control plane ($(SERIAL_LOG)):"; \
		cat $(SERIAL_LOG); \
	elif [ $$rc -eq 0 ]; then \
		MSO_KEEP_CLUSTER=1 $(BIN)/pytest -m serial tests/integration tests/faults || rc=$$?; \
	fi; \
	if [ $$up -eq 0 ] && [ -z "$$KUBECONFIG" ] && [ "$$MSO_KEEP_CLUSTER" != 1 ]; then \
		$(LOCALCLUSTER) down; fi; \
	exit $$rc

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
