# syntax=docker/dockerfile:1
#
# The predictive autoscaler daemon. Two stages:
#   builder  builds the wheel (setup.py's build hook generates the gRPC code from
#            protos/ with grpcio-tools, a build requirement only) and installs it
#            with its dependencies into /opt/venv;
#   runtime  the same base with only /opt/venv copied in: no compiler, no pip, no
#            sources, no grpcio-tools; runs as the non-root user 65532.
#
# Build:  docker build -t predictive-autoscaler:0.1.0 .
#
# Base: python:3.11-slim-bookworm (CPython 3.11.16, Debian 12), pinned by digest so a
# rebuild gets the same interpreter and system libraries. To move to a newer patch
# release, replace the digest with the one `docker buildx imagetools inspect
# python:3.11-slim-bookworm` reports, in this one place.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:528257d48c1da0dcecc2e725d1ae34498d60c965f1241e39cd6a85a8859bdf84

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# A venv without pip of its own: the base interpreter's pip installs into it
# (--python), so the runtime stage copies no installer.
RUN python -m venv --without-pip /opt/venv

# Only what the wheel is built from; .dockerignore keeps everything else out.
COPY pyproject.toml setup.py README.md ./
COPY protos/ protos/
COPY autoscaler/ autoscaler/

# Build isolation installs the build requirements (setuptools, grpcio-tools) from
# pyproject.toml into a throwaway environment; the wheel carries the generated code.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m pip --python /opt/venv/bin/python install /wheels/*.whl \
    && /opt/venv/bin/autoscaler --help > /dev/null \
    && /opt/venv/bin/python -c "import autoscaler._generated.externalscaler_pb2_grpc"


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="predictive-autoscaler" \
      org.opencontainers.image.description="Predictive KEDA external scaler for AI inference workloads" \
      org.opencontainers.image.licenses="Apache-2.0"

# The runtime installs nothing: remove the base image's installers, and add the
# fixed non-root user the Helm chart's securityContext expects.
RUN python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532

# gRPC external scaler (KEDA) and HTTP (/healthz, /readyz, /metrics, the API).
EXPOSE 9100 8080

ENTRYPOINT ["autoscaler"]
CMD ["serve", "--config", "/etc/predictive-autoscaler/config.yaml"]
