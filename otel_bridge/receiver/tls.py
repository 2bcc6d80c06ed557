"""TLS for both receivers: `tls.cert_file`, `key_file` and optionally `client_ca_file` (mutual TLS).

Files are read when a receiver starts; a missing or mismatched file is a ConfigError naming its key.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from otel_bridge.config import Tls
from otel_bridge.errors import ConfigError

__all__ = ["server_ssl_context", "grpc_server_credentials"]


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"`{key}` ({path!r}): cannot read: {exc.strerror or exc}") from None


def server_ssl_context(tls: Tls, section: str) -> ssl.SSLContext:
    """An SSLContext for a server, TLS 1.2 or later; with client_ca_file, client certificates are required."""
    for name in ("cert_file", "key_file", "client_ca_file"):
        if getattr(tls, name) is not None:
            _read(getattr(tls, name), f"{section}.tls.{name}")  # a clear message for a missing file
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"`{section}.tls`: cert_file and key_file are not a PEM certificate and its private key: {exc.reason or exc}"
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"`{section}.tls.client_ca_file`: not a PEM CA certificate: {exc.reason or exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def grpc_server_credentials(tls: Tls, section: str) -> grpc.ServerCredentials:
    server_ssl_context(tls, section)  # the same checks and messages as for HTTP; gRPC's own are opaque
    ca = _read(tls.client_ca_file, f"{section}.tls.client_ca_file") if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(_read(tls.key_file, f"{section}.tls.key_file"), _read(tls.cert_file, f"{section}.tls.cert_file"))],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
