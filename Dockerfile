# syntax=docker/dockerfile:1
# One image for every role: `referendum serve` (servers), `referendum batcher`,
# `referendum migrate` (the migrations Job) and Locust (`locust -f loadtest/locustfile.py`).
# Kubernetes picks the role with the container's args; see k8s/base and docs/deploy.md.
#
# Build: docker build -t registry.example/referendum:0.1.0 .
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
COPY bench/ bench/
RUN pip wheel --no-deps --wheel-dir /wheels .

# Install offline from the wheels just built: nothing newer can sneak in, and --no-deps on the
# project keeps the lock file the only source of versions.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels --requirement requirements.lock \
    && /opt/venv/bin/pip install --no-index --find-links /wheels --no-deps referendum \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---- runtime: slim, non-root, read-only root filesystem friendly ----
FROM python:3.11.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="referendum" \
      org.opencontainers.image.description="Verifiable referendum backend: servers, batcher, migrations, Locust" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric user, so Kubernetes can check runAsNonRoot without resolving names.
RUN groupadd --system --gid 10001 referendum \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin referendum

COPY --from=builder /opt/venv /opt/venv
# Locust takes a locustfile path; the package itself is installed in /opt/venv.
WORKDIR /app
COPY loadtest/locustfile.py loadtest/locustfile.py

# The root filesystem is mounted read-only in Kubernetes; everything that writes goes to /tmp
# (an emptyDir there). Bytecode was compiled in the builder, so Python needs no write access.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    REFERENDUM_HOST=0.0.0.0 \
    REFERENDUM_PORT=8080 \
    REFERENDUM_DATA_DIR=/tmp/referendum

USER 10001:10001
EXPOSE 8080

# The roles differ (the batcher serves no HTTP), so health is checked by each Kubernetes
# container's own probes on /livez and /readyz, not by one image-wide HEALTHCHECK.
HEALTHCHECK NONE

ENTRYPOINT ["referendum"]
CMD ["serve"]
