# portal-gateway: not built in this project's own CI (no Docker engine there); see README.
# tests/test_wheel.py builds the wheel from the files this build stage copies, with the same command,
# installs it into a fresh virtualenv and runs it as this image does: what is tested is what ships.

FROM python:3.11-slim AS build

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# A C compiler so setup.py's mypyc build makes the compiled wheel (this stage only: the image gets the wheel,
# not the compiler). The image's own Python ships its headers; Debian's python3-dev would be another Python's.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip install "build>=1.2"
COPY pyproject.toml setup.py README.md gateway.yaml ./
COPY gateway ./gateway
COPY routes ./routes
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim

# A container is reached through its own interfaces (docker run -p): listen on all of them.
# These outrank the listen section of any config file; pass -e to change them.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PORTAL_GATEWAY__LISTEN__HTTPS=0.0.0.0:8443 \
    PORTAL_GATEWAY__LISTEN__HTTP=0.0.0.0:8080
WORKDIR /app

COPY --from=build /dist/ /tmp/dist/
RUN pip install /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && useradd --system --uid 10001 --home-dir /app portal \
    && mkdir -p /app/certs /app/data /app/logs \
    && chown -R portal /app

USER portal
EXPOSE 8443 8080

# /healthz answers whatever the Host (probes address a container by IP), so 127.0.0.1 gets its 200.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import ssl, urllib.request; urllib.request.urlopen('https://127.0.0.1:8443/healthz', context=ssl._create_unverified_context(), timeout=2)" || exit 1

ENTRYPOINT ["portal-gateway", "serve"]
