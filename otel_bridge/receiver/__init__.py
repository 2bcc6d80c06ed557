"""Receivers: thin adapters from a wire protocol (OTLP/gRPC, OTLP/HTTP) to Pipeline.export."""

from __future__ import annotations

from otel_bridge.config import Auth, Tls

__all__ = ["PROJECT_HEADER", "describe_security"]

# The request header (gRPC metadata) that routes a request's spans to `entity/project`.
PROJECT_HEADER = "project_id"


def describe_security(tls: Tls | None, auth: Auth | None) -> str:
    """What a receiver's start-up log line adds: " (TLS, client certificates required, bearer token)"."""
    parts = []
    if tls is not None:
        parts.append("TLS")
        if tls.client_ca_file is not None:
            parts.append("client certificates required")
    if auth is not None:
        parts.append("bearer token")
    return f" ({', '.join(parts)})" if parts else ""
