# otel-bridge: `docker build -t otel-bridge:0.1.0 .` (tests/test_deploy.py runs these steps in a fresh venv).

# Stage 1 compiles the package (its OTLP decoder is a C extension) into a wheel; only the wheel leaves it,
# so the image carries no compiler.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY otel_bridge ./otel_bridge
RUN pip wheel --no-cache-dir --no-deps --wheel-dir wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies in their own layer, rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\\n')" \
    > requirements.txt && pip install -r requirements.txt && rm requirements.txt pyproject.toml

COPY --from=build /src/wheels ./wheels
RUN pip install --no-deps wheels/*.whl && rm -rf wheels

# An unprivileged user with a fixed uid, so Kubernetes can check runAsNonRoot; its home is the working
# directory (the file sink and a queue directory may go there, or on a mounted volume).
RUN useradd --system --uid 10001 --home-dir /var/lib/otel-bridge --create-home otel-bridge
USER 10001
WORKDIR /var/lib/otel-bridge

# 4317 OTLP/gRPC, 4318 OTLP/HTTP, 13133 /healthz, /readyz, /metrics (telemetry.endpoint)
EXPOSE 4317 4318 13133
# slim has no curl; Python is there. Moving telemetry.endpoint means overriding this port too.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:13133/healthz', timeout=2)"]
ENTRYPOINT ["otel-bridge", "serve"]
