# streambot in a container: `docker build -t streambot .`; docs/deployment.md has the rest.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid, so a bind-mounted /data can be given to it on the host
# (`chown 10001:10001 data`).
RUN groupadd --gid 10001 streambot \
    && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin streambot \
    && mkdir /data && chown 10001:10001 /data && chmod 0700 /data

# Only what the package is built from (pyproject.toml names README.md as its readme, and
# the wheel carries the built-in templates), so other edits keep this layer cached.
COPY pyproject.toml README.md /src/
COPY bot /src/bot
COPY templates /src/templates
RUN pip install --no-cache-dir /src && rm -rf /src

# bot.toml and the SQLite database (with its -wal and -shm files) live here. Declared
# after the chown: a new named volume starts as a copy of this directory, owner included.
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001

# The config must say host = "0.0.0.0" (`python -m bot init --host 0.0.0.0`): 127.0.0.1
# inside the container cannot be reached through a published port.
EXPOSE 8080

# slim has no curl. urlopen raises on a 503, so the container is unhealthy exactly when
# /healthz says so (database, a sink, a stuck outbox, shutting down).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

CMD ["python", "-m", "bot", "run", "-c", "/data/bot.toml"]
