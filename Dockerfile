# syntax=docker/dockerfile:1
# b24bridge image: `serve` (the API) by default, `worker` for job workers; docs/deployment.md.
#   docker build -t b24bridge .
#   docker run --rm b24bridge keys generate
# BuildKit is required (the default builder since Docker 23): the wheels are mounted into the runtime stage instead
# of copied, so they never become a layer of the final image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the project and every dependency as wheels ---------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# pyproject.toml names README.md as the package's long description: the build needs it.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --wheel-dir /wheels .

# --- runtime ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="b24bridge" \
      org.opencontainers.image.description="Self-hosted Bitrix24 integration service" \
      org.opencontainers.image.licenses="MIT"

# B24BRIDGE_HOST: inside a container loopback is reachable from nowhere else, so the API port and a worker's metrics
# port listen on every interface for the proxy and Prometheus (publishing a port is still the operator's choice).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    B24BRIDGE_HOST=0.0.0.0 \
    B24BRIDGE_DATA_DIR=/var/lib/b24bridge \
    B24BRIDGE_LOG_FORMAT=json

# A fixed numeric id, so orchestrators can check "runs as non-root" and volumes can be chowned to it.
RUN groupadd --system --gid 10001 b24bridge \
 && useradd --system --uid 10001 --gid b24bridge --home-dir /var/lib/b24bridge --no-create-home \
            --shell /usr/sbin/nologin b24bridge \
 && mkdir -p /var/lib/b24bridge /etc/b24bridge \
 && chown b24bridge:b24bridge /var/lib/b24bridge

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels b24bridge

COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/b24bridge-healthcheck

# The working directory is where b24bridge looks for `routes.yaml` (B24BRIDGE_ROUTES' default) and a `.env`: mount the
# configuration directory here read-only. Absent file, no routes, as on a workstation. It is owned by root, so the
# service cannot rewrite its own configuration.
WORKDIR /etc/b24bridge
USER 10001:10001

# 8000: the API (`serve`, with /healthz, /readyz, /metrics); 9100: a worker's /metrics.
EXPOSE 8000 9100

# Liveness of whichever role runs here (deploy/docker/healthcheck.py). The start period covers the migrations the
# first process runs on an empty database.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["b24bridge-healthcheck"]

ENTRYPOINT ["b24bridge"]
CMD ["serve", "--host", "0.0.0.0"]
