# otel-bridge: `docker build -t otel-bridge:0.1.0 .` (tests/test_deploy.py runs these steps in a fresh venv).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies in their own layer, rebuilt only when pyproject.toml changes: install the project with a
# placeholder package, then remove the placeholder, keeping the dependencies.
COPY pyproject.toml README.md ./
RUN mkdir otel_bridge && echo '__version__ = "0"' > otel_bridge/__init__.py \
    && pip install . && pip uninstall -y otel-bridge && rm -rf otel_bridge build

COPY otel_bridge ./otel_bridge
RUN pip install --no-deps . && rm -rf build

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
