"""otel-bridge: an OpenTelemetry trace receiver that delivers spans to W&B Weave as calls."""

__version__ = "0.1.0"
__all__ = ["__version__"]
