# syntax=docker/dockerfile:1
#
# microservice-operator container image.
#
#   docker build -t microservice-operator:0.1.0 .
#   tools/image.sh        # the same Dockerfile with podman, no Docker engine needed
#
# Two stages: the builder turns the project and its dependencies into wheels; the
# runtime installs only those wheels into the same slim Python base. The dependency
# set is exactly requirements.lock (hashed; `make lock` regenerates it). No compiler,
# no pip cache, no source tree and no pip itself end up in the final image, and it
# runs as the unprivileged numeric user 65532 so `runAsNonRoot` can be verified by
# the kubelet without reading /etc/passwd.
#
# The base is pinned by version (bump deliberately; pin by digest in a release
# pipeline that can resolve it).
ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, in their own layer: they change far less often than the code.
# Exactly the locked set (requirements.lock, made by `make lock`), every download
# checked against its hash; binary wheels only, so the slim builder never needs a
# compiler. The build backend comes from its own lock too (requirements-build.lock),
# so building the project fetches nothing unpinned.
COPY requirements.lock requirements-build.lock ./
RUN pip install --require-hashes --only-binary=:all: -r requirements-build.lock \
 && pip wheel --require-hashes --only-binary=:all: --wheel-dir /wheels -r requirements.lock
# Then the project itself, without resolving its dependencies again.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="microservice-operator" \
      org.opencontainers.image.description="Kubernetes operator that keeps a microservice alive: Deployment, Service, HPA, PDB and health-based failover from one MicroService resource." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12.12-slim-bookworm"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are bind-mounted from the builder, so they never become a layer here.
# A passwd entry for 65532 exists because kopf asks getpass.getuser() for its peer id.
# pip is removed last: nothing installs anything at run time.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels microservice-operator \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin nonroot \
 && python -m pip uninstall --yes pip \
 && rm -rf /root/.cache
USER 65532:65532
WORKDIR /tmp
# 8080: Prometheus metrics; 8081: kopf health endpoint (/healthz).
EXPOSE 8080 8081
ENTRYPOINT ["microservice-operator"]
