#!/usr/bin/env bash
# Builds the local control plane's binaries once into a cache outside the clone,
# keyed by version, so fresh clones (CI) and later sessions reuse them.
# Usage: tools/localcluster/build.sh   -> prints the bin directory on stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${MSO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/microservice-operator}"
bin="$cache/bin"
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS="-trimpath -mod=mod -buildvcs=false"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# build NAME VERSION MODULE_DIR PACKAGE [LDFLAGS]: builds to $bin/NAME-VERSION atomically.
build() {
  local name=$1 version=$2 dir=$3 pkg=$4 ldflags=${5:-}
  local out="$bin/$name-$version"
  if [[ -x "$out" ]]; then return 0; fi
  log "Building $name $version (cached at $out)"
  local start=$SECONDS
  (cd "$here/$dir" && go build -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
  log "Built $name $version in $((SECONDS - start))s"
}

kube_ld="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=35 \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
build etcd "$ETCD_VERSION" etcd .
build kube-apiserver "$KUBE_VERSION" kube k8s.io/kubernetes/cmd/kube-apiserver "$kube_ld"
build kube-controller-manager "$KUBE_VERSION" kube k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ld"
build kube-scheduler "$KUBE_VERSION" kube k8s.io/kubernetes/cmd/kube-scheduler "$kube_ld"
build kwok "$KWOK_VERSION" kwok sigs.k8s.io/kwok/cmd/kwok \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
build metrics-server "$METRICS_SERVER_VERSION" metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server \
  "-X sigs.k8s.io/metrics-server/pkg/version.gitVersion=$METRICS_SERVER_VERSION"
echo "$bin"
