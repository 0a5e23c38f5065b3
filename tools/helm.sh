#!/usr/bin/env bash
# Builds Helm 3 once from the Go module proxy (no GitHub release download needed)
# into a version-keyed cache outside the clone, so fresh clones (CI) and later
# sessions reuse it. The chart tests (tests/unit/test_chart.py,
# tests/integration/test_helm.py) call this from a session fixture.
#
# Usage: tools/helm.sh   -> builds if missing, prints the helm binary's path on stdout.
# The first build takes a few minutes; afterwards it is instant.
set -euo pipefail

HELM_VERSION=v3.20.2
# Kubernetes minor of the client-go that HELM_VERSION pins (go.mod: k8s.io/client-go
# v0.35.x); `helm template`/`helm lint` report it as .Capabilities.KubeVersion.
HELM_K8S_MAJOR=1
HELM_K8S_MINOR=35

cache="${MSO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/microservice-operator}"
dir="$cache/bin/helm-$HELM_VERSION"
out="$dir/helm"

if [[ -x "$out" ]]; then
	echo "$out"
	exit 0
fi
if ! command -v go >/dev/null 2>&1; then
	echo "tools/helm.sh: 'go' not found on PATH; needed to build helm $HELM_VERSION" >&2
	exit 2
fi

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
log "Building helm $HELM_VERSION (cached at $out)"
start=$SECONDS
mkdir -p "$cache/bin"
# Install into a temporary GOBIN and rename, so an interrupted build never
# leaves a half-written binary at the cached path.
tmp="$(mktemp -d "$cache/bin/.helm-$HELM_VERSION.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
	ld+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=$HELM_K8S_MAJOR"
	ld+=" -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_K8S_MINOR"
done
CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false" GOBIN="$tmp" \
	go install -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
mkdir -p "$dir"
mv "$tmp/helm" "$out"
log "Built helm $HELM_VERSION in $((SECONDS - start))s"
echo "$out"
