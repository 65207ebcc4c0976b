# syntax=docker/dockerfile:1
#
# The project's image. Two targets, both used by docker-compose.yml:
#
#   app    (default)  Python 3.11 + the `traffic` package installed from
#                     requirements.lock (with the dashboard's Leaflet files)
#                     + Beam's Python SDK `boot` binary.
#                     Runs the API, the one-shot jobs (topics, train, replay,
#                     stream submission). ENTRYPOINT is `traffic`.
#   flink             app + Java 17 + the Flink 1.19.3 distribution (the same
#                     one the local platform installs from the apache-flink
#                     wheels). Runs the JobManager, and each TaskManager with
#                     Beam's Python SDK worker pool beside it.
#
#   docker build -t traffic-forecast:0.1.0 .
#   docker build -t traffic-forecast-flink:0.1.0 --target flink .
#
# Both run as the unprivileged user `traffic` (uid 10001); the Python packages
# are owned by root and read-only to it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG GO_IMAGE=golang:1.26
ARG NODE_IMAGE=node:22-bookworm-slim

# --- Beam's Python SDK boot binary (starts SDK workers with the pipeline options)
FROM ${GO_IMAGE} AS boot
ARG BEAM_VERSION=2.77.0
ENV CGO_ENABLED=0 GOBIN=/out GOFLAGS=-trimpath
RUN go install "github.com/apache/beam/sdks/v2/python/container@v${BEAM_VERSION}" \
 && mv /out/container /out/boot

# --- The dashboard's npm packages (Leaflet), pinned by api/package-lock.json
FROM ${NODE_IMAGE} AS assets
WORKDIR /src/api
COPY api/package.json api/package-lock.json ./
RUN npm ci --no-audit --no-fund

# --- The Python environment: the package and exactly the locked dependency versions
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN pip install "pip==25.3" "setuptools==80.9.0" wheel
# A C compiler for the package's two extensions (ml._tree_walk, ml._row_matmul: setup.py); the runtime stage
# gets the built package, not the compiler.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.lock setup.py ./
COPY schemas/ schemas/
COPY transforms/ transforms/
COPY ml/ ml/
COPY pipelines/ pipelines/
COPY runners/ runners/
COPY api/ api/
# Fill api/static/vendor/ first: `pip install .` packages api/static as it is.
COPY --from=assets /src/api/node_modules/ api/node_modules/
RUN python -m api.vendor
RUN pip install --no-build-isolation -c requirements.lock . \
 && pip check \
 && traffic --help > /dev/null

# --- The Flink distribution, from the same wheels and version as runners/install.py
FROM ${PYTHON_IMAGE} AS flink-dist
ARG FLINK_VERSION=1.19.3
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-deps --no-compile --target /opt/pyflink \
      "apache-flink==${FLINK_VERSION}" "apache-flink-libraries==${FLINK_VERSION}" \
 && mkdir -p /opt/flink \
 && cd /opt/pyflink/pyflink \
 && cp -a bin conf lib opt plugins /opt/flink/ \
 && chmod a+rx /opt/flink/bin/*.sh \
 && test -f "/opt/flink/lib/flink-dist-${FLINK_VERSION}.jar"

# --- Common runtime: the installed environment, the bundled data, the user
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRAFFIC_WORK_DIR=/var/lib/traffic/work \
    TRAFFIC_CACHE_DIR=/var/lib/traffic/cache \
    TRAFFIC_MODEL_REGISTRY=/var/lib/traffic/models \
    TRAFFIC_API_SENSORS_CSV=/opt/traffic/data/metr-la/sensors.csv
RUN groupadd --system --gid 10001 traffic \
 && useradd --system --uid 10001 --gid traffic --home-dir /var/lib/traffic --no-create-home \
      --shell /usr/sbin/nologin traffic
COPY --from=build /usr/local/ /usr/local/
COPY --from=boot /out/boot /opt/apache/beam/boot
COPY data/metr-la/ /opt/traffic/data/metr-la/
# Writable by `traffic`: its state (mount points of the named volumes start from
# these directories and their owner) and the per-worker venvs Beam's boot makes.
RUN mkdir -p /var/lib/traffic/work /var/lib/traffic/cache /var/lib/traffic/models /var/lib/traffic/data \
      /var/lib/traffic/flink /var/lib/traffic/beam-artifacts /opt/apache/beam-venv \
 && chown -R traffic:traffic /var/lib/traffic /opt/apache/beam-venv
WORKDIR /var/lib/traffic

# --- Flink JobManager / TaskManager (+ Beam worker pool)
FROM runtime AS flink
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*
COPY --from=flink-dist /opt/flink/ /opt/flink/
COPY deploy/flink/config.yaml /opt/traffic/flink-conf/config.yaml
COPY deploy/flink/taskmanager-with-worker-pool.sh /opt/traffic/bin/taskmanager-with-worker-pool
RUN cp /opt/flink/conf/log4j-console.properties /opt/flink/conf/log4j.properties \
      /opt/flink/conf/logback-console.xml /opt/flink/conf/logback.xml /opt/traffic/flink-conf/ \
 && chmod a+rx /opt/traffic/bin/taskmanager-with-worker-pool \
 && mkdir -p /var/lib/traffic/flink-log \
 && chown traffic:traffic /var/lib/traffic/flink-log
ENV FLINK_HOME=/opt/flink \
    FLINK_CONF_DIR=/opt/traffic/flink-conf \
    FLINK_LOG_DIR=/var/lib/traffic/flink-log \
    BEAM_WORKER_POOL_PORT=50000
USER traffic
EXPOSE 6123 6122 6124 8081 50000
ENTRYPOINT ["/opt/flink/bin/jobmanager.sh", "start-foreground"]

# --- The project image (default target)
FROM runtime AS app
USER traffic
EXPOSE 8000
ENTRYPOINT ["traffic"]
CMD ["--help"]
