# One image for the code server, the webservers and the daemon of the docker compose stack.
# An exact version and its digest (the multi-platform index, so amd64 and arm64 both resolve). To
# move to a newer version, read the new tag's digest where Docker Hub is reachable:
#   docker buildx imagetools inspect python:<tag> --format '{{json .Manifest.Digest}}'
FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/dagster/app

# Dependencies first, from the hashed lock file (requirements.lock, generated from pyproject.toml):
# every package and version fixed, every file checked against its SHA-256. This layer is rebuilt
# only when the lock changes, not on every code change.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# Then the code, the sample data and the stack's instance and workspace files.
COPY churn_platform ./churn_platform
COPY data/customer_churn_data.csv ./data/customer_churn_data.csv
COPY deploy ./deploy
RUN pip install --no-deps -e . \
 && mkdir -p /opt/dagster/home/storage /opt/dagster/warehouse /opt/dagster/backups \
 && cp deploy/dagster.yaml /opt/dagster/home/dagster.yaml

# Runs as an unprivileged user. The volume mount points are created (and owned) here, so the named
# volumes start out writable by this user.
RUN useradd --system --uid 10001 --home-dir /opt/dagster dagster \
 && chown -R dagster:dagster /opt/dagster/home /opt/dagster/warehouse /opt/dagster/backups
USER dagster

ENV DAGSTER_HOME=/opt/dagster/home \
    CHURN_DUCKDB_PATH=/opt/dagster/warehouse/churn_warehouse.duckdb \
    CHURN_BACKUP_DIR=/opt/dagster/backups \
    CHURN_MODEL_DIR=/opt/dagster/warehouse/models \
    CHURN_SOURCE_CSV=/opt/dagster/app/data/customer_churn_data.csv

# The compose file gives each service its command; alone, the image serves the code.
EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "churn_platform.definitions"]
