"""TLS, mutual TLS and bearer-token auth on both receivers, with certificates made in the test."""

from __future__ import annotations

import asyncio
import ssl
import time

import grpc
import httpx
import pytest
from conftest import API_KEY, bridge_settings
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from spans import request, span

from otel_bridge.app import Bridge
from otel_bridge.errors import ConfigError

ROUTED = {"wandb.entity": "e", "wandb.project": "p"}
TOKEN = "s3cret-token-of-the-test"


def _tls(certs, *, mutual: bool) -> dict:
    tls = {"cert_file": str(certs.server.cert), "key_file": str(certs.server.key)}
    if mutual:
        tls["client_ca_file"] = str(certs.ca)
    return tls


def _secured(upstream, certs, *, mutual: bool = False, token: str | None = None):
    section = {"tls": _tls(certs, mutual=mutual)} if certs else {}
    if token:
        section["auth"] = {"bearer_token": token}
    return bridge_settings(upstream, receiver={"grpc": dict(section), "http": dict(section)})


def _grpc_export(endpoint: str, credentials=None, metadata=()):
    channel = grpc.secure_channel(endpoint, credentials) if credentials else grpc.insecure_channel(endpoint)
    with channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        return stub.Export(request(span("s"), resource=ROUTED), metadata=metadata, timeout=5)


def _http_export(bridge, *, verify=True, cert=None, headers=None) -> httpx.Response:
    with httpx.Client(verify=verify, cert=cert, timeout=5) as client:
        return client.post(
            f"{bridge.http_url}/v1/traces",
            content=request(span("s"), resource=ROUTED).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf", **(headers or {})},
        )


def _client_context(certs, client=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def _grpc_credentials(certs, client=None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
    return grpc.ssl_channel_credentials(certs.ca.read_bytes(), client.key.read_bytes(), client.cert.read_bytes())


def test_tls_on_both_receivers(upstream, certs, start_bridge):
    bridge = start_bridge(_secured(upstream, certs))
    assert bridge.http_url.startswith("https://")
    _grpc_export(bridge.grpc_endpoint, _grpc_credentials(certs))
    assert _http_export(bridge, verify=_client_context(certs)).status_code == 200
    upstream.wait_for_calls(2)
    # Plaintext clients and clients that do not trust the CA get nowhere.
    with pytest.raises(grpc.RpcError) as plaintext:
        _grpc_export(bridge.grpc_endpoint)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        _http_export(bridge, verify=ssl.create_default_context())
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(bridge.http_url.replace("https://", "http://") + "/v1/traces", content=b"", timeout=5)


@pytest.mark.parametrize("client", ["client", None, "stranger"])
def test_mutual_tls_requires_a_client_certificate_from_the_ca(upstream, certs, start_bridge, client):
    bridge = start_bridge(_secured(upstream, certs, mutual=True))
    pair = getattr(certs, client) if client else None
    if client == "client":
        _grpc_export(bridge.grpc_endpoint, _grpc_credentials(certs, pair))
        assert _http_export(bridge, verify=_client_context(certs, pair)).status_code == 200
        upstream.wait_for_calls(2)
        return
    with pytest.raises(grpc.RpcError) as refused:
        _grpc_export(bridge.grpc_endpoint, _grpc_credentials(certs, pair))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        _http_export(bridge, verify=_client_context(certs, pair))
    assert upstream.calls == []


@pytest.mark.parametrize(
    ("authorization", "accepted"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),  # the scheme is case-insensitive
        (None, False),
        ("Bearer wrong-token", False),
        (f"Bearer {TOKEN}x", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
    ],
)
def test_bearer_token_on_both_receivers(upstream, start_bridge, authorization, accepted):
    bridge = start_bridge(_secured(upstream, None, token=TOKEN))
    metadata = (("authorization", authorization),) if authorization else ()
    headers = {"Authorization": authorization} if authorization else {}
    if accepted:
        _grpc_export(bridge.grpc_endpoint, metadata=metadata)
        assert _http_export(bridge, headers=headers).status_code == 200
        upstream.wait_for_calls(2)
        return
    with pytest.raises(grpc.RpcError) as refused:
        _grpc_export(bridge.grpc_endpoint, metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer <token>" in refused.value.details()
    answer = _http_export(bridge, headers=headers)
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in answer.text and TOKEN not in refused.value.details()
    metrics = httpx.get(bridge.telemetry_url + "/metrics").text
    assert 'otelbridge_receiver_refused_requests_total{reason="unauthenticated",transport="grpc"} 1.0' in metrics
    assert 'otelbridge_receiver_refused_requests_total{reason="unauthenticated",transport="http"} 1.0' in metrics
    assert upstream.calls == []


def test_tls_and_token_together_and_health_needs_no_token(upstream, certs, start_bridge):
    bridge = start_bridge(_secured(upstream, certs, mutual=True, token=TOKEN))
    credentials = _grpc_credentials(certs, certs.client)
    _grpc_export(bridge.grpc_endpoint, credentials, metadata=(("authorization", f"Bearer {TOKEN}"),))
    with pytest.raises(grpc.RpcError) as refused:
        _grpc_export(bridge.grpc_endpoint, credentials)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Probes and load balancers carry no token: grpc.health.v1 answers without one.
    with grpc.secure_channel(bridge.grpc_endpoint, credentials) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    upstream.wait_for_calls(1)


def test_secrets_never_reach_logs_or_endpoints(upstream, start_bridge, caplog):
    caplog.set_level("DEBUG")
    bridge = start_bridge(_secured(upstream, None, token=TOKEN))
    _http_export(bridge, headers={"Authorization": "Bearer wrong"})
    _http_export(bridge, headers={"Authorization": f"Bearer {TOKEN}"})
    upstream.wait_for_calls(1)
    pages = [httpx.get(bridge.telemetry_url + path).text for path in ("/healthz", "/readyz", "/metrics")]
    for text in (caplog.text, *pages):
        assert TOKEN not in text and API_KEY not in text
    assert "OTLP/HTTP receiver listening on 127.0.0.1:" in caplog.text and "(bearer token)" in caplog.text


@pytest.mark.parametrize(
    ("receiver", "tls", "message"),
    [
        (
            "http",
            {"cert_file": "/does/not/exist.crt", "key_file": "/x.key"},
            "`receiver.http.tls.cert_file` ('/does/not/exist.crt'): cannot read",
        ),
        ("grpc", "swapped", "`receiver.grpc.tls`: cert_file and key_file are not a PEM certificate and its private key"),
        ("grpc", "ca is a key", "`receiver.grpc.tls.client_ca_file`: not a PEM CA certificate"),
    ],
)
def test_bad_tls_files_fail_before_any_port_opens(certs, receiver, tls, message):
    if tls == "swapped":
        tls = {"cert_file": str(certs.server.key), "key_file": str(certs.server.cert)}
    elif tls == "ca is a key":
        tls = {**_tls(certs, mutual=False), "client_ca_file": str(certs.client.key)}
    settings = bridge_settings(receiver={receiver: {"tls": tls}})

    async def build() -> None:  # as `serve` does: inside the event loop, before start() binds anything
        Bridge(settings)

    with pytest.raises(ConfigError) as raised:
        asyncio.run(build())
    assert message in str(raised.value)


def test_an_https_upstream_is_verified_against_the_trusted_cas(certs, start_bridge, monkeypatch, caplog):
    """A plain-http upstream skips loading the CA bundle; an https one is still verified, with SSL_CERT_FILE."""
    from upstream import UpstreamServer

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certs.server.cert), str(certs.server.key))
    with UpstreamServer(api_key=API_KEY, ssl_context=context) as upstream:
        assert upstream.url.startswith("https://")
        untrusted = start_bridge(bridge_settings(upstream))
        _grpc_export(untrusted.grpc_endpoint)
        deadline = time.monotonic() + 10
        while "CERTIFICATE_VERIFY_FAILED" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text[-2000:]
            time.sleep(0.05)
        assert upstream.calls == []
        untrusted.stop()
        monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))  # the test CA trusted, as a user would
        trusted = start_bridge(bridge_settings(upstream))
        _grpc_export(trusted.grpc_endpoint)
        assert [call["op_name"] for call in upstream.wait_for_calls(1)] == ["s"]
