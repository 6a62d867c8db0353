# syntax=docker/dockerfile:1
# Two images from one Dockerfile:
# - the default target `runtime`, for every role of the product: `referendum serve` (servers),
#   `referendum batcher`, `referendum migrate` (the migrations Job). It carries only the runtime
#   dependencies (requirements.lock): no Locust, gevent or matplotlib.
# - the target `locust`, for the load generators (`locust -f loadtest/locustfile.py`): the same
#   package plus the `loadtest` extra (requirements-loadtest.lock).
# Kubernetes picks the role with the container's args; see k8s/base, k8s/loadtest and
# docs/deploy.md.
#
# Build: docker build -t registry.example/referendum:0.1.0 .
#        docker build --target locust -t registry.example/referendum-locust:0.1.0 .
# The base image is pinned by tag; pin it by digest too in your registry mirror
# (python:3.11.11-slim-bookworm@sha256:...) once you have pulled and scanned it.

# ---- builder: wheels for exactly the pinned versions, installed offline into /opt/venv ----
FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies first, so a source change does not rebuild them. --no-deps: only what the lock
# names is fetched, so an incomplete lock fails the offline install below instead of pulling
# an unpinned version.
COPY requirements.lock ./
RUN pip wheel --no-deps --wheel-dir /wheels --requirement requirements.lock

COPY pyproject.toml README.md ./
COPY referendum_cli.py ./
COPY referendum_core/ referendum_core/
COPY referendum_service/ referendum_service/
COPY server/ server/
COPY batcher/ batcher/
COPY loadtest/ loadtest/
COPY auditor/ auditor/
COPY trustee/ trustee/
COPY node/ node/
COPY bench/ bench/
RUN pip wheel --no-deps --wheel-dir /wheels .

# Install offline from the wheels just built: nothing newer can sneak in, and --no-deps on the
# project keeps the lock file the only source of versions.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels --requirement requirements.lock \
    && /opt/venv/bin/pip install --no-index --find-links /wheels --no-deps referendum \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---- loadtest-builder: the same virtualenv plus the loadtest extra, for the Locust image ----
FROM builder AS loadtest-builder

COPY requirements-loadtest.lock ./
RUN pip wheel --no-deps --wheel-dir /wheels --requirement requirements-loadtest.lock \
    && /opt/venv/bin/pip install --no-index --find-links /wheels \
       --requirement requirements-loadtest.lock \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---- base: what both images share; slim, non-root, read-only root filesystem friendly ----
FROM python:3.11.11-slim-bookworm AS base

# A fixed numeric user, so Kubernetes can check runAsNonRoot without resolving names.
RUN groupadd --system --gid 10001 referendum \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin referendum

WORKDIR /app

# The root filesystem is mounted read-only in Kubernetes; everything that writes goes to /tmp
# (an emptyDir there). Bytecode was compiled in the builder, so Python needs no write access.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

# The roles differ (the batcher serves no HTTP), so health is checked by each Kubernetes
# container's own probes on /livez and /readyz, not by one image-wide HEALTHCHECK.
HEALTHCHECK NONE

USER 10001:10001

# ---- locust: the load generators (k8s/loadtest) ----
FROM base AS locust

LABEL org.opencontainers.image.title="referendum-locust" \
      org.opencontainers.image.description="Locust load generators for the referendum backend" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=loadtest-builder /opt/venv /opt/venv
# Locust takes a locustfile path; the package itself is installed in /opt/venv.
COPY loadtest/locustfile.py loadtest/locustfile.py

ENV MPLCONFIGDIR=/tmp/matplotlib

# The web UI, and the port workers connect to on the master.
EXPOSE 8089 5557

ENTRYPOINT ["locust"]
CMD ["-f", "loadtest/locustfile.py"]

# ---- runtime (the default target): servers, batcher, migrations ----
FROM base AS runtime

LABEL org.opencontainers.image.title="referendum" \
      org.opencontainers.image.description="Verifiable referendum backend: servers, batcher, migrations" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /opt/venv /opt/venv

ENV REFERENDUM_HOST=0.0.0.0 \
    REFERENDUM_PORT=8080 \
    REFERENDUM_DATA_DIR=/tmp/referendum

EXPOSE 8080

ENTRYPOINT ["referendum"]
CMD ["serve"]
