# Moorage container image: one stateless node. Configure it with MOORAGE_* variables (see
# docs/configuration.md) or a YAML file mounted at /etc/moorage/moorage.yaml; for several nodes
# point them at one PostgreSQL and one S3 bucket (deploy/compose.yaml, docs/deployment.md).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY moorage ./moorage
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim-bookworm
# libssl3 provides libcrypto, whose SHA-256 context lets an upload continue on any node.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/moorage --create-home moorage
COPY --from=build /install /usr/local
USER moorage
ENV MOORAGE_DATA_DIR=/var/lib/moorage \
    MOORAGE_HTTP_HOST=0.0.0.0 \
    MOORAGE_HTTP_PORT=5000 \
    MOORAGE_LOG_FORMAT=json
VOLUME ["/var/lib/moorage"]
EXPOSE 5000
# /readyz answers 503 when the database or the storage is unreachable, or while draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:5000/readyz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["moorage"]
CMD ["serve"]
