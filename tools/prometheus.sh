#!/usr/bin/env bash
# Make sure `prometheus` and `promtool` are installed (Debian/Ubuntu package
# `prometheus`). The unit tests run `promtool check metrics|rules` and
# `promtool test rules`; the integration tests start a real Prometheus on
# 127.0.0.1 that scrapes the operator.
#
# Idempotent and quick when both are already there (no apt call at all).
# Installs without recommends (no node-exporter) and never leaves the
# packaged prometheus.service running on :9090: service start-up is denied
# through policy-rc.d for the duration of the install.
#
# Usage: tools/prometheus.sh          install if missing, print the paths
#        tools/prometheus.sh --check  exit 1 if missing, install nothing
set -euo pipefail

have() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

report() {
	echo "prometheus: $(command -v prometheus) ($(prometheus --version 2>&1 | head -n1))"
	echo "promtool:   $(command -v promtool)"
}

if have; then
	report
	exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
	echo "prometheus/promtool not found on PATH" >&2
	exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
	cat >&2 <<'EOF'
prometheus/promtool not found and this is not a Debian/Ubuntu system.
Install them yourself (https://prometheus.io/download/: put `prometheus` and
`promtool` on PATH), or set PROMETHEUS and PROMTOOL to their paths.
EOF
	exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		SUDO=(sudo -n)
	else
		echo "Installing the 'prometheus' package needs root (or password-less sudo):" >&2
		echo "  sudo apt-get install -y --no-install-recommends prometheus" >&2
		exit 1
	fi
fi

# Deny service start-up during the install unless the admin has a policy already.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $POLICY ]]; then
	"${SUDO[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
	created_policy=1
fi
cleanup() { if [[ $created_policy -eq 1 ]]; then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

install() {
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends prometheus
}
# Only refresh the package lists when the package is not installable as they are.
if ! install; then
	"${SUDO[@]}" apt-get update -q
	install
fi

have || {
	echo "apt-get installed 'prometheus' but prometheus/promtool are still not on PATH" >&2
	exit 1
}
report
