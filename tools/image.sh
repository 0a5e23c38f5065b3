#!/usr/bin/env bash
# Build the operator image without a Docker engine or a registry: rootful podman
# (buildah inside) on a stand-in Python base image made from Debian packages.
#
#   tools/image.sh                 # -> localhost/microservice-operator:<version>
#   tools/image.sh my/image:tag    # another tag
#
# 1. Installs podman, buildah, runc and mmdebstrap with apt-get if any is missing
#    (needs root and Debian/Ubuntu; CI runs as root).
# 2. Builds the stand-in base $MSO_BASE_IMAGE (default
#    localhost/mso-python-standin:3.11-bookworm) with mmdebstrap from Debian's
#    packages, once: it is skipped when the image exists (MSO_REBUILD_BASE=1 forces).
#    It provides what the Dockerfile expects of python:3.x-slim: `python` and `pip`
#    on PATH (pip installed from Debian's own pip wheel, so it can be uninstalled
#    like the official image's), no EXTERNALLY-MANAGED marker, groupadd/useradd,
#    CA certificates.
# 3. Builds the repository's Dockerfile as it is, only passing
#    --build-arg PYTHON_IMAGE=<stand-in>; the Dockerfile's default base stays the
#    pinned python:3.12 slim image for everyone with a registry.
#
# Why runc and these flags: Debian's podman 4.3 defaults to crun, which refuses to
# start containers on this kind of host (hybrid cgroups, default rlimits above the
# hard limit); runc with explicit nofile/nproc ulimits works. --network host because
# rootful netavark/CNI networking is not needed (and the builder needs PyPI).
#
# The build log goes to $MSO_IMAGE_LOG (default build/image-build.log); on failure
# its tail is printed. On success the last line of stdout is the image reference.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n1)"
IMAGE="${1:-localhost/microservice-operator:${VERSION}}"
SUITE="${MSO_BASE_SUITE:-bookworm}"  # bookworm: Python 3.11; trixie: Python 3.13
BASE_IMAGE="${MSO_BASE_IMAGE:-localhost/mso-python-standin:$SUITE}"
MIRROR="${MSO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${MSO_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
LOG="${MSO_IMAGE_LOG:-$ROOT/build/image-build.log}"
# Options every container (build steps included) needs on this kind of host.
RUN_OPTS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host)

log() { printf 'image.sh: %s\n' "$*" >&2; }

fail() {
  log "$1; last lines of $LOG:"
  tail -n "${MSO_IMAGE_LOG_TAIL:-40}" "$LOG" >&2 || true
  exit 1
}

ensure_tools() {
  local missing=()
  for tool in podman buildah runc mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing ${missing[*]}: install them (needs root and apt-get)"
    exit 2
  fi
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >>"$LOG" 2>&1 || fail "apt-get update failed"
  apt-get install -y -qq --no-install-recommends podman buildah runc mmdebstrap \
    >>"$LOG" 2>&1 || fail "apt-get install failed"
}

build_base() {
  if [ "${MSO_REBUILD_BASE:-0}" != 1 ] && podman image exists "$BASE_IMAGE"; then
    log "base $BASE_IMAGE exists (cached)"
    return 0
  fi
  local tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  log "building the stand-in base $BASE_IMAGE from Debian $SUITE (mmdebstrap)"
  # The builder stage downloads the locked wheels from the package index with the
  # base's CA store. A host behind a TLS-inspecting proxy trusts its CA in its own
  # store; the stand-in trusts what this host trusts (each certificate of the host's
  # bundle added as a local CA; on other hosts these duplicate Debian's).
  # MSO_BASE_HOST_CAS=0 leaves Debian's store as it is.
  local HOST_CAS_HOOK=':'
  if [ "${MSO_BASE_HOST_CAS:-1}" = 1 ] && [ -f "$HOST_CA_BUNDLE" ]; then
    HOST_CAS_HOOK='d="$1"/usr/local/share/ca-certificates/host && mkdir -p "$d" '
    HOST_CAS_HOOK+="&& awk -v d=\"\$d\" '/BEGIN CERT/{n++} n{print > (d \"/host-\" n \".crt\")}' $HOST_CA_BUNDLE "
    HOST_CAS_HOOK+='&& chroot "$1" update-ca-certificates'
  fi
  # What python:3.x-slim has, from Debian packages. Docs, man pages and locales are
  # left out as in the slim images. The customize hooks make it behave like them:
  # pip from Debian's pip wheel into /usr/local (with a RECORD, so `pip uninstall
  # pip` works), no PEP 668 marker (the official image has none either).
  mmdebstrap --variant=minbase --mode=root \
    --include=python3,python-is-python3,python3-pip-whl,ca-certificates,passwd \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='chroot "$1" sh -c "whl=\$(ls /usr/share/python-wheels/pip-*.whl) && python3 \$whl/pip install --no-index --no-cache-dir --disable-pip-version-check \$whl"' \
    --customize-hook="$HOST_CAS_HOOK" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/root/.cache' \
    "$SUITE" "$tmp/base.tar" \
    "deb $MIRROR $SUITE main" \
    "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main" \
    >>"$LOG" 2>&1 || fail "mmdebstrap failed"
  podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tmp/base.tar" "$BASE_IMAGE" >>"$LOG" 2>&1 || fail "podman import failed"
  # The base must run Python and pip the way the Dockerfile uses them.
  podman run --rm "${RUN_OPTS[@]}" "$BASE_IMAGE" \
    sh -c 'python --version && pip --version && command -v groupadd useradd' \
    >>"$LOG" 2>&1 || fail "the stand-in base does not run python/pip"
}

build_image() {
  log "building $IMAGE from $ROOT/Dockerfile (PYTHON_IMAGE=$BASE_IMAGE)"
  local start=$SECONDS
  podman build "${RUN_OPTS[@]}" \
    --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
    --build-arg "VERSION=$VERSION" \
    --layers \
    -t "$IMAGE" \
    -f "$ROOT/Dockerfile" "$ROOT" \
    >>"$LOG" 2>&1 || fail "podman build failed"
  local size
  size="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
  log "built $IMAGE in $((SECONDS - start))s, $((size / 1000000)) MB ($size bytes)"
}

mkdir -p "$(dirname "$LOG")"
: >"$LOG"
ensure_tools
build_base
build_image
echo "$IMAGE"
