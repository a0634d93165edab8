# The gateway, the job worker and the migration tooling (dbctl) share one image.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY dbctl/ dbctl/
COPY gateway/ gateway/
COPY worker/ worker/
COPY sql/ sql/
RUN useradd --system --no-create-home booking \
 && mkdir /tmp/metrics && chown booking /tmp/metrics
USER booking
EXPOSE 8000
# GET /metrics sums every uvicorn worker's files here (gateway/metrics.py); emptied at each start,
# as `make run` does (a restarted container reuses pids: an old file must not pass for a live worker).
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/metrics
# As `make run` serves it (dbctl/__main__.py uvicorn_args): bounded request heads, JSON logs.
CMD ["sh", "-c", "rm -f /tmp/metrics/*.db; exec uvicorn --factory gateway.app:create_app --host 0.0.0.0 --port 8000 \
     --http gateway.serving:BoundedHttpToolsProtocol --timeout-keep-alive 65 \
     --backlog 16384 --loop gateway.serving:GatewayLoop --log-config gateway/logging.json \
     --no-access-log --timeout-graceful-shutdown 10 --no-proxy-headers"]
