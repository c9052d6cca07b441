# portal-gateway: not built in this project's own CI (no Docker engine there); see README.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md gateway.yaml ./
COPY gateway ./gateway
COPY routes ./routes
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app portal \
    && mkdir -p /app/certs /app/data /app/logs \
    && chown -R portal /app /app/certs /app/data /app/logs

USER portal
EXPOSE 8443 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import ssl, urllib.request; urllib.request.urlopen('https://127.0.0.1:8443/healthz', context=ssl._create_unverified_context(), timeout=2)" || exit 1

ENTRYPOINT ["portal-gateway", "serve"]
