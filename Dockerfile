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
RUN pip install --no-deps . && rm -rf /src/build

RUN useradd --system --uid 10001 --home-dir /var/lib/otel-bridge --create-home otel-bridge
USER 10001
WORKDIR /var/lib/otel-bridge

# 4317 OTLP/gRPC, 4318 OTLP/HTTP, 13133 health and metrics
EXPOSE 4317 4318 13133
ENTRYPOINT ["otel-bridge", "serve"]
